// node shoot.cjs UI_URL DRIFTED_RUN_ID FAILED_RUN_ID SCORE_RUN_ID OUT_DIR: screenshots of the Prefect UI
// (playwright-core driving Debian's /usr/bin/chromium, headless). shoot.sh prepares the runs.
const { chromium } = require("playwright-core");

(async () => {
  const [ui, drifted, failed, scored, out] = process.argv.slice(2);
  const browser = await chromium.launch({ executablePath: "/usr/bin/chromium", args: ["--no-sandbox"] });
  const page = await browser.newPage({ viewport: { width: 1440, height: 900 } });
  const open = async (path) => {
    await page.goto(ui + path, { waitUntil: "networkidle" });
    await page.waitForTimeout(3000);
  };
  // The runs list without subflows: Drifted (its state name and the `drifted` tag), Completed,
  // Failed, each on its own row.
  await page.setViewportSize({ width: 1440, height: 1250 });
  await open("/runs");
  await page.getByText("Hide subflows").click();
  await page.waitForTimeout(2000);
  await page.screenshot({ path: `${out}/runs-drifted.png` });
  await page.setViewportSize({ width: 1440, height: 1400 });
  // A known failure: Failed, its one line in the logs, no traceback.
  await open(`/runs/flow-run/${failed}`);
  await page.screenshot({ path: `${out}/failed-run.png` });
  // The drifted nightly: its state, tag and the WARNING naming the features.
  await open(`/runs/flow-run/${drifted}`);
  await page.screenshot({ path: `${out}/drifted-run.png` });
  // Its score subflow, run by the worker: batchpred's INFO progress lines in the UI.
  await open(`/runs/flow-run/${scored}`);
  await page.screenshot({ path: `${out}/worker-run-logs.png` });
  await browser.close();
})();
