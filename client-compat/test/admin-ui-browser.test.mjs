// The Admin UI bundle of @socket.io/admin-ui (its ui/dist, from npm, served
// by switchboard at /admin-ui/ with --admin-ui-dir) in a real browser:
// Debian's Chromium driven by playwright-core (no browser is downloaded;
// CHROMIUM overrides /usr/bin/chromium; without one the test is skipped,
// except under CI=true, where a missing browser is a failure). It logs in, sees the test sockets and their rooms, and
// disconnects one socket, which that socket observes.
import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import { createRequire } from "node:module";
import path from "node:path";
import { io } from "socket.io-client";
import { chromium } from "playwright-core";
import { startServer, token, next } from "./server.mjs";

const require = createRequire(import.meta.url);
const bcrypt = require("bcryptjs");
const UI_DIR = path.join(path.dirname(require.resolve("@socket.io/admin-ui/package.json")), "ui", "dist");
const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";
const PASSWORD = "browser-admin-pw";

const SKIP = !existsSync(CHROMIUM) && process.env.CI !== "true" && `no ${CHROMIUM}`;
describe("Admin UI in Chromium", { skip: SKIP }, () => {
  let server, browser;
  const sockets = [];
  const chat = async (sub) => {
    const s = io(server.url, { auth: { token: token(sub) }, reconnection: false, transports: ["websocket"] });
    sockets.push(s);
    await next(s, "connect");
    return s;
  };

  before(async () => {
    server = await startServer(undefined, undefined, [
      "--admin-ui",
      "--admin-username",
      "admin",
      "--admin-password-hash",
      bcrypt.hashSync(PASSWORD, 10),
      "--admin-ui-dir",
      UI_DIR,
    ]);
    browser = await chromium.launch({ executablePath: CHROMIUM, headless: true });
  });
  after(async () => {
    sockets.forEach((s) => s.close());
    await browser?.close();
    await server?.stop();
  });

  it("logs in, lists the sockets and rooms, disconnects one socket", async () => {
    const bob = await chat("bob");
    assert.equal((await bob.timeout(5000).emitWithAck("room:join", "lobby")).success, true);
    const erin = await chat("erin");
    const erinId = erin.id;

    const page = await browser.newPage();
    const errors = [];
    page.on("pageerror", (e) => errors.push(e));
    // Offline: the bundle's Google Fonts / CDN stylesheets are not fetched.
    await page.route("**/*", (route) =>
      route.request().url().startsWith(server.url) ? route.continue() : route.abort(),
    );
    await page.goto(`${server.url}/admin-ui/`);
    await page.getByLabel("Server URL").fill(server.url);
    await page.getByLabel("Username").fill("admin");
    await page.getByLabel("Password").fill(PASSWORD);
    await page.getByRole("button", { name: "Connect" }).click();
    await page.getByText("connected", { exact: true }).first().waitFor({ timeout: 10_000 });

    await page.goto(`${server.url}/admin-ui/#/sockets/`);
    await page.getByText(bob.id).first().waitFor({ timeout: 10_000 });
    await page.getByText(erinId).first().waitFor({ timeout: 10_000 });

    await page.goto(`${server.url}/admin-ui/#/rooms/`);
    await page.getByText("room:lobby").first().waitFor({ timeout: 10_000 });

    await page.goto(`${server.url}/admin-ui/#/sockets/`);
    // The row of the sockets table: its last button is "disconnect".
    const rows = page.locator("tr", { hasText: erinId });
    await rows.first().waitFor({ timeout: 10_000 });
    const gone = next(erin, "disconnect", 10_000);
    await rows.first().locator("button").last().click();
    assert.equal(await gone, "io server disconnect");
    // socket_disconnected reached the UI: the socket leaves the table (the
    // click also opened the socket's page, which shows it disconnected).
    await page.goto(`${server.url}/admin-ui/#/sockets/`);
    await page.getByText(bob.id).first().waitFor({ timeout: 10_000 });
    const deadline = Date.now() + 10_000;
    while ((await rows.count()) > 0) {
      assert.ok(Date.now() < deadline, "the disconnected socket is still listed");
      await new Promise((r) => setTimeout(r, 100));
    }
    assert.equal(bob.connected, true);
    await page.screenshot({ path: path.join(process.env.TMPDIR || "/tmp", "switchboard-admin-ui.png") });
    assert.deepEqual(errors, []);
  });
});
