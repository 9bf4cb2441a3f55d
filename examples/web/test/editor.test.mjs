// The demo page's shared notes in a real browser: people in browser contexts
// of their own edit one Yjs document through the y-socket.io provider, the
// server in between (no shortcut between the contexts), and end up with the
// same text.
//
// Needs what demo.test.mjs needs: the built page, the server binary
// (SWITCHBOARD_BIN, default ../../target/debug/switchboard) and Chromium
// (CHROMIUM, default /usr/bin/chromium).
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { WAIT_MS, startServer, stopServer as stop, launchBrowser } from "./server.mjs";

const NOTES = "#editor-text";

let server; // { child, port, url, log }
const serverLogs = []; // what each server logged after it started
let browser;
const pageErrors = [];

// Stops the server and keeps what it logged after starting (its dev-mode
// warning comes before "listening").
async function stopServer() {
  if (!server?.child || server.child.exitCode !== null || server.child.signalCode !== null) return;
  await stop(server);
  serverLogs.push(server.log.join("").split("listening on http://")[1]);
}

before(async () => {
  server = await startServer();
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  await stopServer();
});

// One person in a browser context of their own, signed in by name, with the
// shared notes synced and editable.
async function person(name) {
  const context = await browser.newContext({ viewport: { width: 1280, height: 720 } });
  const page = await context.newPage();
  page.on("pageerror", (e) => pageErrors.push(`${name}: ${e.message}`));
  page.on("console", (m) => m.type() === "error" && pageErrors.push(`${name}: ${m.text()}`));
  await page.goto(server.url);
  await page.fill("#name", name);
  await page.click("#signin-name button[type=submit]");
  await synced(page, name);
  return page;
}

async function synced(page, name) {
  try {
    await page.locator("#editor-state", { hasText: /^synced$/ }).waitFor({ timeout: WAIT_MS });
  } catch {
    assert.fail(`${name}'s notes never synced; they say: ${await page.textContent("#editor-state")}`);
  }
  assert.equal(await page.isEnabled(NOTES), true);
}

const notes = (page) => page.inputValue(NOTES);

// Waits until the notes of every page read `text`.
async function converge(pages, text) {
  for (const page of pages) {
    await page
      .waitForFunction(([sel, text]) => document.querySelector(sel).value === text, [NOTES, text], { timeout: WAIT_MS })
      .catch(async () => assert.fail(`notes never became ${JSON.stringify(text)}: ${JSON.stringify(await notes(page))}`));
  }
}

// Puts the caret (or a selection) at [start, end) of the notes, then types.
async function typeAt(page, start, text, { end = start, delay = 0 } = {}) {
  await page.focus(NOTES);
  await page.evaluate(([sel, s, e]) => document.querySelector(sel).setSelectionRange(s, e), [NOTES, start, end]);
  await page.keyboard.type(text, { delay });
}

const selection = (page) =>
  page.evaluate((sel) => {
    const el = document.querySelector(sel);
    return el.value.slice(el.selectionStart, el.selectionEnd);
  }, NOTES);

const caret = (page) => page.evaluate((sel) => document.querySelector(sel).selectionStart, NOTES);

// Waits until an element matching `selector` shows `text`.
function see(page, selector, text, timeout = WAIT_MS) {
  return page.locator(selector, { hasText: text }).first().waitFor({ timeout });
}

const present = (page, name) => see(page, "#editor-people", name);

// Is `part` in `whole`, in order, possibly with other characters between?
function subsequence(part, whole) {
  let i = 0;
  for (const c of whole) if (c === part[i]) i++;
  return i === part.length;
}

test("the shared notes, as three people edit them", async (t) => {
  let alice, bob, carol;

  await t.test("alice and bob open the notes and see each other there", async () => {
    alice = await person("alice");
    bob = await person("bob");
    assert.equal(await notes(alice), "");
    await present(alice, "bob");
    await present(bob, "alice");
  });

  await t.test("what alice types reaches bob, and bob's edit reaches alice", async () => {
    await typeAt(alice, 0, "Shopping: milk, eggs.");
    await converge([alice, bob], "Shopping: milk, eggs.");
    // A deletion and an insertion in one edit: "eggs" selected and replaced.
    await typeAt(bob, 16, "bread 🍕", { end: 20 });
    await converge([alice, bob], "Shopping: milk, bread 🍕.");
    // 🍕 and 🍞 share their first UTF-16 unit: the edit must not split them.
    await typeAt(alice, 22, "🍞", { end: 24 });
    await converge([alice, bob], "Shopping: milk, bread 🍞.");
  });

  await t.test("bob's edit before alice's caret and selection moves them along with the text", async () => {
    const text = "Shopping: milk, bread 🍞.";
    await typeAt(alice, text.length, ""); // caret at the end
    await typeAt(bob, 0, "Today. ");
    await converge([alice, bob], `Today. ${text}`);
    assert.equal(await caret(alice), `Today. ${text}`.length);
    // A selection keeps covering the same word.
    await alice.evaluate((sel) => document.querySelector(sel).setSelectionRange(17, 21), NOTES);
    assert.equal(await selection(alice), "milk");
    await typeAt(bob, 7, "List: ");
    await converge([alice, bob], `Today. List: ${text}`);
    assert.equal(await selection(alice), "milk");
  });

  await t.test("both type at once in different places: each one's text stays whole", async () => {
    const before = await notes(alice);
    const a = " Also: apples and pears.";
    const b = "[bob was here] ";
    await Promise.all([
      typeAt(alice, before.length, a, { delay: 15 }),
      typeAt(bob, 0, b, { delay: 15 }),
    ]);
    await converge([alice, bob], b + before + a);
  });

  await t.test("both type at once in the same place: they converge and nothing is lost", async () => {
    const before = await notes(alice);
    assert.ok(before.includes("List: "), before);
    const at = before.indexOf("List: ") + "List: ".length;
    const a = "AAAAAAAAAAAA";
    const b = "bbbbbbbbbbbb";
    await Promise.all([typeAt(alice, at, a, { delay: 10 }), typeAt(bob, at, b, { delay: 10 })]);
    // The same text for both, whatever the order of their letters.
    await alice.waitForFunction(
      ([sel, length]) => document.querySelector(sel).value.length === length,
      [NOTES, before.length + a.length + b.length],
      { timeout: WAIT_MS },
    );
    const text = await notes(alice);
    await converge([alice, bob], text);
    assert.equal(text.slice(0, at), before.slice(0, at));
    assert.equal(text.slice(at + a.length + b.length), before.slice(at));
    const typed = text.slice(at, at + a.length + b.length);
    assert.ok(subsequence(a, typed) && subsequence(b, typed), typed);
  });

  await t.test("carol opens the notes later and gets the whole text", async () => {
    const text = await notes(alice);
    carol = await person("carol");
    await converge([carol], text);
    await present(alice, "carol");
    await present(carol, "alice");
    await present(carol, "bob");
    // And her edits reach the others.
    await typeAt(carol, text.length, " (carol)");
    await converge([alice, bob, carol], `${text} (carol)`);
  });

  await t.test("undo takes back only one's own edit", async () => {
    const text = await notes(alice);
    // Edits less than half a second apart are undone together: a pause first.
    await alice.waitForTimeout(600);
    await typeAt(alice, 0, "DRAFT ");
    await converge([bob], `DRAFT ${text}`);
    await typeAt(bob, `DRAFT ${text}`.length, "!");
    await converge([alice], `DRAFT ${text}!`);
    await alice.keyboard.press("Control+z");
    await converge([alice, bob, carol], `${text}!`);
  });

  await t.test("a reload keeps the text; signing out leaves the notes", async () => {
    const text = await notes(alice);
    await bob.reload();
    await synced(bob, "bob");
    await converge([bob], text);
    await bob.click("#sign-out");
    // The server tells the others at once that bob's editor is gone.
    await see(alice, "#editor-people", /^Also here: carol$/);
    assert.equal(await bob.inputValue(NOTES), "");
    assert.equal(await bob.isDisabled(NOTES), true);
  });

  await t.test("no errors in the pages", async () => {
    // Checked first: the refused reconnects that follow are logged as errors.
    assert.deepEqual(pageErrors, [], "errors in the pages");
  });

  await t.test("after a server restart the notes reconnect by themselves, and the text is back", async () => {
    const text = await notes(alice);
    await stopServer();
    await see(alice, "#editor-state", "reconnecting…");
    // A restarted dev-mode server has a new secret and, with a memory store,
    // no text: alice's page mints a new token and reconnects, and what alice
    // and carol have goes back to the server.
    server = await startServer(server.port);
    await see(alice, "#editor-state", /^synced$/, 3 * WAIT_MS);
    await see(carol, "#editor-state", /^synced$/, 3 * WAIT_MS);
    await typeAt(carol, text.length, ".");
    await converge([alice, carol], `${text}.`);
    const dave = await person("dave");
    await converge([dave], `${text}.`);
  });

  await t.test("no refusals or warnings in the server's log", async () => {
    await stopServer();
    for (const log of serverLogs) assert.doesNotMatch(log, /refused| ERROR | WARN /, log);
  });
});
