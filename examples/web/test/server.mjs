// What the browser tests share: a dev-mode server serving the built page,
// stopped by its pid, and Debian's Chromium.
//
// The server binary is SWITCHBOARD_BIN (default ../../target/debug/switchboard),
// Chromium is CHROMIUM (default /usr/bin/chromium); no browser is downloaded.
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { existsSync } from "node:fs";
import net from "node:net";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

export const WEB = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
export const REPO = path.resolve(WEB, "../..");
const BIN = process.env.SWITCHBOARD_BIN || path.join(REPO, "target/debug/switchboard");
const DIST = path.join(WEB, "dist");
export const WAIT_MS = 10_000;

function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.on("error", reject);
    s.listen(0, "127.0.0.1", () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

/** Dev mode (no JWT key), a throwaway store, the built page at / (the Yjs
 * documents of its shared notes are served by default). `log` collects
 * what it writes to stderr. */
export async function startServer(port) {
  assert.ok(existsSync(BIN), `no server binary at ${BIN} (cargo build, or set SWITCHBOARD_BIN)`);
  assert.ok(existsSync(path.join(DIST, "index.html")), "no dist/index.html: run npm run build first");
  port ??= await freePort();
  const env = { ...process.env, RUST_LOG: "info" };
  for (const k of ["SWITCHBOARD_JWT_SECRET", "SWITCHBOARD_JWT_PUBLIC_KEY", "SWITCHBOARD_LISTEN"]) delete env[k];
  const child = spawn(
    BIN,
    ["--listen", `127.0.0.1:${port}`, "--database-url", "memory", "--static-dir", DIST],
    { env, stdio: ["ignore", "ignore", "pipe"] },
  );
  const log = [];
  child.stderr.setEncoding("utf8");
  child.stderr.on("data", (chunk) => log.push(chunk));
  await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`server did not start:\n${log.join("")}`)), WAIT_MS);
    child.stderr.on("data", () => {
      if (log.join("").includes("listening on http://")) {
        clearTimeout(timer);
        resolve();
      }
    });
    child.on("exit", (code) => reject(new Error(`server exited (${code}):\n${log.join("")}`)));
  });
  return { child, port, url: `http://127.0.0.1:${port}`, log };
}

/** SIGTERM by pid, and wait for the process to be gone. */
export async function stopServer(server) {
  const child = server?.child;
  if (!child || child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise((resolve) => child.once("exit", resolve));
  process.kill(child.pid, "SIGTERM");
  await exited;
}

export function launchBrowser() {
  return chromium.launch({
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    args: ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  });
}
