// Drives Debian's Chromium (headless) through playwright-core against a running dashboard.
// Usage: node browser.mjs URL SHOTS_DIR INSTRUCTION KILLED ROBOT...
// Steps, each bounded: every ROBOT online on the page and the brain ready; INSTRUCTION typed
// into the box (priority 3) runs to "done"; then it prints "kill KILLED", waits for a line on
// stdin, and waits until the page shows KILLED offline. Screenshots go to SHOTS_DIR.
// Prints "ok" and exits 0 when every step passed; a failure exits 1 with the reason.
import { chromium } from "playwright-core";
import { createInterface } from "node:readline";

const [url, shots, instruction, killed, ...robots] = process.argv.slice(2);
const reader = createInterface({ input: process.stdin });
const lines = reader[Symbol.asyncIterator]();
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  headless: true,
  args: ["--no-sandbox"],  // root in CI containers
});
try {
  const page = await browser.newPage({ viewport: { width: 1400, height: 900 } });
  page.on("pageerror", (err) => console.error("page error:", err.message));
  await page.goto(url);
  for (const name of robots) {
    await page.locator(`#robots tr[data-robot="${name}"][data-online="true"]`).waitFor({ timeout: 30000 });
    await page.locator(`#map g[data-map-robot="${name}"][data-online="true"]`).waitFor({ timeout: 5000 });
  }
  await page.locator("#brain", { hasText: "ready" }).waitFor({ timeout: 30000 });
  await page.screenshot({ path: `${shots}/1-fleet.png` });
  console.log("fleet shown");

  await page.fill("#text", instruction);
  await page.fill("#priority", "3");
  await page.click("#send");
  const row = page.locator("#tasks tr", { hasText: instruction }).first();
  await row.waitFor({ timeout: 10000 });
  const task = await row.getAttribute("data-task");
  console.log(`task ${task}`);
  await page.locator(`#tasks tr[data-task="${task}"][data-status="done"]`).waitFor({ timeout: 90000 });
  const prio = await page.locator(`#tasks tr[data-task="${task}"] td:nth-child(3)`).textContent();
  if (prio.trim() !== "3") throw new Error(`priority shown ${prio}, sent 3`);
  await page.locator("#gantt rect").first().waitFor({ timeout: 5000 });
  await page.screenshot({ path: `${shots}/2-done.png` });
  console.log(`done ${task}`);

  console.log(`kill ${killed}`);
  await lines.next();
  await page.locator(`#robots tr[data-robot="${killed}"][data-online="false"]`).waitFor({ timeout: 30000 });
  await page.locator(`#map g[data-map-robot="${killed}"][data-online="false"]`).waitFor({ timeout: 5000 });
  await page.fill("#filter", `robots/${killed}/alive`);
  await page.waitForFunction((topic) => {  // the filter leaves only that topic's events
    const shown = [...document.querySelectorAll("#events div")];
    return shown.length > 0 && shown.every((d) => d.dataset.topic === topic);
  }, `robots/${killed}/alive`, { timeout: 5000 });
  await page.screenshot({ path: `${shots}/3-offline.png` });
  console.log("ok");
} catch (err) {
  console.log(`failed: ${err.message}`);
  process.exitCode = 1;
} finally {
  reader.close();  // else the open stdin keeps node running
  process.stdin.destroy();
  await browser.close();
}
