// Starts the real switchboard binary for the tests, and mints tokens with its
// `token` subcommand (so that path is exercised too).
import { spawn, execFileSync } from "node:child_process";
import { createServer } from "node:net";
import { createHmac, timingSafeEqual } from "node:crypto";
import { mkdtempSync, readdirSync } from "node:fs";
import { tmpdir } from "node:os";
import { fileURLToPath } from "node:url";
import path from "node:path";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..", "..");
export const BIN = process.env.SWITCHBOARD_BIN || path.join(root, "target", "debug", "switchboard");
export const SECRET = "client-compat-secret-client-compat-secret";

export function token(sub, extra = []) {
  return execFileSync(BIN, ["token", "--jwt-secret", SECRET, "--sub", sub, "--name", sub.toUpperCase(), ...extra], {
    encoding: "utf8",
  }).trim();
}

export async function freePort() {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once("error", reject);
    srv.listen(0, "127.0.0.1", () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

/** A SQLite file in a fresh temporary directory. */
export function tempDb() {
  return `sqlite://${mkdtempSync(path.join(tmpdir(), "switchboard-compat-"))}/chat.db`;
}

/** Starts the binary on `port` (or a free one) with SQLite database `db` (or a fresh one). */
export async function startServer(port, db, extra = []) {
  port = port ?? (await freePort());
  db = db ?? tempDb();
  const args = ["--listen", `127.0.0.1:${port}`, "--jwt-secret", SECRET, "--namespace", "/acme", "--database-url", db, ...extra];
  const child = spawn(BIN, args, {
    env: { ...process.env, RUST_LOG: "warn" },
    stdio: ["ignore", "inherit", "inherit"],
  });
  const url = `http://127.0.0.1:${port}`;
  const deadline = Date.now() + 10_000;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`server exited with ${child.exitCode}`);
    try {
      const r = await fetch(`${url}/healthz`);
      if (r.ok) break;
    } catch {}
    if (Date.now() > deadline) {
      child.kill("SIGKILL");
      throw new Error("server did not start within 10 s");
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  const stop = () =>
    new Promise((resolve) => {
      // Already gone (exited, or killed by a signal).
      if (child.exitCode !== null || child.signalCode !== null) return resolve(child.exitCode);
      child.once("exit", (code) => resolve(code));
      child.kill("SIGTERM");
    });
  return { url, port, db, child, stop };
}

/** Resolves with the next `event` on `socket`, or rejects after `ms`. */
export function next(socket, event, ms = 5000) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      socket.off(event, on);
      reject(new Error(`no ${event} within ${ms} ms`));
    }, ms);
    const on = (data) => {
      clearTimeout(timer);
      resolve(data);
    };
    socket.once(event, on);
  });
}

/**
 * The first of several events: `outcomes` maps each event to what to resolve
 * with. One timer, cleared when an event comes (a lost race of `next`s would
 * leave its timers holding the test process open for their whole length).
 */
export function firstOf(socket, outcomes, ms = 5000) {
  return new Promise((resolve, reject) => {
    const listeners = Object.entries(outcomes).map(([event, outcome]) => {
      const on = (...args) => {
        done();
        resolve(outcome(...args));
      };
      socket.once(event, on);
      return [event, on];
    });
    const done = () => {
      clearTimeout(timer);
      listeners.forEach(([event, on]) => socket.off(event, on));
    };
    const timer = setTimeout(() => {
      done();
      reject(new Error(`none of ${Object.keys(outcomes).join(", ")} within ${ms} ms`));
    }, ms);
  });
}

/** Resolves true if `event` does NOT arrive within `ms`. */
export function none(socket, event, ms = 300) {
  return new Promise((resolve, reject) => {
    const on = (data) => {
      clearTimeout(timer);
      reject(new Error(`unexpected ${event}: ${JSON.stringify(data)}`));
    };
    const timer = setTimeout(() => {
      socket.off(event, on);
      resolve(true);
    }, ms);
    socket.once(event, on);
  });
}

/** Signs arbitrary claims with HS256 (for tokens the CLI will not mint). */
export function signHs256(claims, secret = SECRET) {
  const b64 = (obj) => Buffer.from(JSON.stringify(obj)).toString("base64url");
  const body = `${b64({ alg: "HS256", typ: "JWT" })}.${b64(claims)}`;
  const sig = createHmac("sha256", secret).update(body).digest("base64url");
  return `${body}.${sig}`;
}

/** The value of one Prometheus sample on the server's /metrics (0 when absent). */
export async function metric(url, sample) {
  const text = await (await fetch(`${url}/metrics`)).text();
  for (const line of text.split("\n")) {
    if (line.startsWith(`${sample} `)) return Number(line.slice(sample.length + 1));
  }
  return 0;
}

/**
 * Checks `X-Switchboard-Signature: t=…,v1=…` over the raw body as a backend
 * would (HMAC-SHA256 of "<t>.<body>", `t` within 5 minutes).
 */
export function signatureValid(header, body, secret) {
  const m = /^t=(\d+),v1=([0-9a-f]{64})$/.exec(header ?? "");
  if (!m || Math.abs(Date.now() / 1000 - Number(m[1])) > 300) return false;
  const want = createHmac("sha256", secret).update(`${m[1]}.${body}`).digest();
  return timingSafeEqual(want, Buffer.from(m[2], "hex"));
}

/** psql on PATH, or the one beside the PostgreSQL that scripts/services.sh runs. */
function psql() {
  try {
    execFileSync("psql", ["--version"]);
    return "psql";
  } catch {
    const versions = readdirSync("/usr/lib/postgresql").sort((a, b) => Number(a) - Number(b));
    return `/usr/lib/postgresql/${versions.at(-1)}/bin/psql`;
  }
}

/**
 * A fresh database on the PostgreSQL of `adminUrl` (a test that must not see
 * other tests' rows): its URL, and `drop()` (forcing out connections).
 */
export function freshPgDatabase(adminUrl, prefix) {
  const name = `${prefix}_${process.pid}_${Date.now()}`;
  const sql = (q) => execFileSync(psql(), [adminUrl, "-v", "ON_ERROR_STOP=1", "-qc", q]);
  sql(`CREATE DATABASE ${name}`);
  const url = new URL(adminUrl);
  url.pathname = `/${name}`;
  return { url: url.toString(), drop: () => sql(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`) };
}
