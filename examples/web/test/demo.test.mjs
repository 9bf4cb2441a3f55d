// The demo page in a real browser (Debian's Chromium, driven by
// playwright-core; no browser is downloaded): three people on one dev-mode
// server, each in a browser context of their own, do what a newcomer would.
//
// Needs: the built page (`npm test` builds it first), the server binary (SWITCHBOARD_BIN,
// default ../../target/debug/switchboard) and Chromium (CHROMIUM, default
// /usr/bin/chromium). Leaves a screenshot in target/demo.png (and, with
// UPDATE_SCREENSHOT=1, in docs/images/demo.png, the README's picture).
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { mkdirSync, copyFileSync } from "node:fs";
import path from "node:path";
import { REPO, WAIT_MS, startServer, stopServer, launchBrowser } from "./server.mjs";

let server; // { child, url, log }
let browser;
const pageErrors = [];

before(async () => {
  server = await startServer();
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  await stopServer(server);
});

// One person: a browser context of their own (own storage), signed in by name.
// ?page=3 makes history pages short, so "load older" has something to do.
async function person(name) {
  const context = await browser.newContext({ viewport: { width: 1280, height: 720 } });
  const page = await context.newPage();
  page.on("pageerror", (e) => pageErrors.push(`${name}: ${e.message}`));
  page.on("response", (r) => r.status() >= 400 && pageErrors.push(`${name}: ${r.status()} ${r.url()}`));
  page.on("console", (m) => m.type() === "error" && pageErrors.push(`${name}: ${m.text()} ${JSON.stringify(m.location())}`));
  await page.goto(`${server.url}/?page=3`);
  await page.fill("#name", name);
  await page.click("#signin-name button[type=submit]");
  await connected(page);
  assert.match(await page.textContent("#whoami"), new RegExp(name));
  return page;
}

const connected = (page) => see(page, "#conn-state", /^connected$/);

// Waits until an element matching `selector` shows `text`.
function see(page, selector, text) {
  return page.locator(selector, { hasText: text }).first().waitFor({ timeout: WAIT_MS });
}

async function join(page, room) {
  await page.fill("#room-input", room);
  await page.click("#join-form button");
  await see(page, "#room-title", `# ${room}`);
}

async function send(page, text) {
  await page.fill("#message-input", text);
  await page.press("#message-input", "Enter");
}

test("the demo page, as three people use it", async (t) => {
  let alice, bob, carol;

  await t.test("alice, bob and carol sign in by name and join a room", async () => {
    alice = await person("alice");
    bob = await person("bob");
    carol = await person("carol");
    for (const p of [alice, bob, carol]) await join(p, "lobby");
    // Presence per user, as alice sees it.
    for (const who of ["alice", "bob", "carol"]) await see(alice, "#members li", who);
  });

  await t.test("bob sees alice typing, then her message with her name and the time", async () => {
    await alice.locator("#message-input").pressSequentially("hel");
    await see(bob, "#typing", "alice is typing…");
    await alice.locator("#message-input").pressSequentially("lo bob");
    await alice.press("#message-input", "Enter");
    const msg = bob.locator("#messages li", { hasText: "hello bob" });
    await msg.waitFor({ timeout: WAIT_MS });
    assert.equal(await msg.locator(".who").textContent(), "alice");
    assert.match(await msg.locator("time").textContent(), /\d{1,2}:\d{2}/);
    // Posting ends the indicator.
    await bob.locator("#typing", { hasText: /^$/ }).waitFor({ timeout: WAIT_MS });
    // Messages are text: markup in one is shown, not applied.
    await send(alice, "<b>not bold</b>, just text");
    await see(bob, "#messages li .text", "<b>not bold</b>, just text");
    assert.equal(await bob.locator("#messages b").count(), 0);
    for (const n of [1, 2]) await send(alice, `update ${n}`);
    await see(bob, "#messages li", "update 2");
  });

  await t.test("after a reload bob is still signed in and sees the history, older pages on demand", async () => {
    await bob.reload();
    await connected(bob);
    await see(bob, "#room-title", "# lobby");
    // A page of 3: the latest three, then "load older" for the first one.
    await see(bob, "#messages li", "update 2");
    assert.equal(await bob.locator("#messages li").count(), 3);
    assert.equal(await bob.locator("#messages li", { hasText: "hello bob" }).count(), 0);
    await bob.click("#load-older");
    await see(bob, "#messages li", "hello bob");
    assert.equal(await bob.locator("#messages li").count(), 4);
    await bob.locator("#load-older").waitFor({ state: "hidden", timeout: WAIT_MS });
  });

  await t.test("bob answers in the room", async () => {
    await send(bob, "hi alice!");
    const msg = alice.locator("#messages li", { hasText: "hi alice!" });
    await msg.waitFor({ timeout: WAIT_MS });
    assert.equal(await msg.locator(".who").textContent(), "bob");
  });

  await t.test("private messages between alice and bob reach them and nobody else", async () => {
    await alice.fill("#dm-to", "bob");
    await alice.fill("#dm-input", "psst, bob: lunch at noon?");
    await alice.click("#dm-form button");
    await see(bob, "#dms li", "psst, bob: lunch at noon?");
    await see(bob, "#dms li .who", "from alice");
    await see(alice, "#dms li .who", "to bob");
    // Clicking a private message fills in the reply's recipient.
    await bob.click("#dms li");
    assert.equal(await bob.inputValue("#dm-to"), "alice");
    await bob.fill("#dm-input", "sure, see you there");
    await bob.click("#dm-form button");
    await see(alice, "#dms li", "sure, see you there");
    // carol is connected and listening (a room message sent after the
    // private ones reaches her), yet no private message came to her.
    await send(alice, "anyone else for lunch?");
    await see(carol, "#messages li", "anyone else for lunch?");
    await new Promise((r) => setTimeout(r, 500));
    assert.equal(await carol.locator("#dms li").count(), 0);
    const text = await carol.textContent("body");
    assert.ok(!text.includes("psst") && !text.includes("see you there"), text);
  });

  await t.test("the server's error acks are shown to the user", async () => {
    await send(alice, "");
    await see(alice, "#notice", "Message not sent: content is empty (invalid_payload)");
    await send(alice, "x".repeat(4001));
    await see(alice, "#notice", "(too_large)");
    // The refused text stays in the box, to be fixed.
    assert.equal((await alice.inputValue("#message-input")).length, 4001);
    await alice.fill("#message-input", "");
  });

  await t.test("screenshot", async () => {
    // Something in the shared notes (editor.test.mjs tries them out).
    await see(alice, "#editor-state", /^synced$/);
    await alice.fill("#editor-text", "Lunch at noon: alice, bob.\nBring: plates, a cake.");
    // bob starts a reply, so the picture shows typing too.
    await bob.locator("#message-input").pressSequentially("on my way");
    await see(alice, "#typing", "bob is typing…");
    await send(alice, "oops, that was a bit long");
    await see(alice, "#messages li", "oops, that was a bit long");
    await see(alice, "#typing", "bob is typing…");
    const shot = path.join(REPO, "target/demo.png");
    mkdirSync(path.dirname(shot), { recursive: true });
    await alice.screenshot({ path: shot });
    // The README's picture is this one; refreshed on request, so that a test
    // run does not change a committed file.
    if (process.env.UPDATE_SCREENSHOT === "1") {
      mkdirSync(path.join(REPO, "docs/images"), { recursive: true });
      copyFileSync(shot, path.join(REPO, "docs/images/demo.png"));
    }
  });

  await t.test("carol leaves: she is gone from the room's members", async () => {
    await carol.locator("#rooms li", { hasText: "lobby" }).locator(".leave").click();
    await see(carol, "#room-title", "No room yet");
    await alice.locator("#members li", { hasText: "carol" }).waitFor({ state: "detached", timeout: WAIT_MS });
  });

  await t.test("when the server goes away the page says it is reconnecting", async () => {
    // Checked first: the refused reconnects that follow are logged as errors.
    assert.deepEqual(pageErrors, [], "errors in the pages");
    await stopServer(server);
    await see(alice, "#conn-state", "reconnecting");
  });

  await t.test("when it is back the page signs in again by itself and rejoins the room", async () => {
    // A restarted dev-mode server has a new secret: the old token is refused,
    // and a page signed in by name mints a new one.
    server = await startServer(server.port);
    await alice.locator("#conn-state", { hasText: /^connected$/ }).waitFor({ timeout: 3 * WAIT_MS });
    await see(alice, "#members li", "alice");
    await see(alice, "#room-title", "# lobby");
  });
});
