// Browser test of the sandbox payment flow, in headless Debian chromium.
//
// Starts nothing itself: scripts/e2e (through e2e/run.lua) starts the sandbox,
// creates the links and passes them in the environment:
//   E2E_SANDBOX_URL   the sandbox (admin API under /__sandbox/)
//   E2E_LINK_KO       a live link, display_language ko, KRW, three methods
//   E2E_LINK_EN       a live link, display_language en, USD
//   E2E_LINK_DIRECT   a live link with `direct`
//   E2E_EXPIRED_KO    a deactivated link (ko)
//   E2E_EXPIRED_EN    a link past its expired_at (en)
//   E2E_OUT           where screenshots go (build/e2e)
//   CHROMIUM          the browser (default /usr/bin/chromium)
// Prints TAP ("ok N - ...", "not ok N - ...") on stdout, plus "# key=value"
// lines the driver reads (the imp_uids paid here).
import { chromium } from 'playwright-core';
import { mkdtempSync, mkdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const env = (k) => {
  const v = process.env[k];
  if (!v) { console.log(`Bail out! ${k} is not set`); process.exit(2); }
  return v;
};
const SANDBOX = env('E2E_SANDBOX_URL');
const OUT = process.env.E2E_OUT || 'build/e2e';
mkdirSync(OUT, { recursive: true });

let n = 0;
let failed = 0;
function ok(cond, name, detail) {
  n += 1;
  if (cond) { console.log(`ok ${n} - ${name}`); return true; }
  failed += 1;
  console.log(`not ok ${n} - ${name}`);
  if (detail !== undefined) console.log(`# ${String(detail).split('\n').join('\n# ')}`);
  return false;
}
// Runs one step; an exception is one failing test, and the rest go on.
async function step(name, fn) {
  try { await fn(); } catch (e) { ok(false, name, e && e.stack || e); }
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
async function inboxFor(impUid, wantCount = 1, waitMs = 5000) {
  const deadline = Date.now() + waitMs;
  for (;;) {
    const res = await fetch(`${SANDBOX}/__sandbox/inbox`);
    const list = await res.json();
    const hits = list.filter((e) => e.body.includes(impUid));
    if (hits.length >= wantCount || Date.now() > deadline) return hits;
    await sleep(50);
  }
}

const userDataDir = mkdtempSync(join(tmpdir(), 'portone-e2e-chromium-'));
const context = await chromium.launchPersistentContext(userDataDir, {
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  headless: true,
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  viewport: { width: 390, height: 844 },   // a phone
  deviceScaleFactor: 2,
  isMobile: true,
  hasTouch: true,
  locale: 'ko-KR',
  timeout: 60000,
});
const page = context.pages()[0] || await context.newPage();
page.setDefaultTimeout(15000);

// Every request the pages make must go to the sandbox: no outside assets.
const sandboxOrigin = new URL(SANDBOX).origin;
const outside = [];
page.on('request', (req) => {
  const u = req.url();
  if (!u.startsWith(sandboxOrigin) && !u.startsWith('data:') && !u.startsWith('about:')) outside.push(u);
});

const shot = (name) => page.screenshot({ path: join(OUT, `${name}.png`), fullPage: true });

try {
  let impUid;

  await step('bridge page (ko)', async () => {
    const res = await page.goto(env('E2E_LINK_KO'));
    ok(res.status() === 200, 'bridge page answers 200', res.status());
    ok(await page.locator('html').getAttribute('lang') === 'ko', 'bridge page is in Korean');
    ok((await page.locator('h1.title').innerText()).includes('E2E 주문'), 'bridge page shows the title');
    ok((await page.locator('.row.name').innerText()).includes('녹차 세트'), 'bridge page shows the product');
    ok((await page.locator('.amount').innerText()).trim() === '10,000원', 'amount reads 10,000원',
      await page.locator('.amount').innerText());
    const labels = await page.locator('button.pay-method').allInnerTexts();
    ok(labels.join('|') === '신용카드|카카오페이|계좌이체', 'one button per method, with its label', labels);
    const box = await page.locator('button.pay-method').first().boundingBox();
    ok(box && box.width >= 300 && box.height >= 44, 'buttons are thumb-sized on a phone', JSON.stringify(box));
    const scrollW = await page.evaluate(() => document.documentElement.scrollWidth);
    ok(scrollW <= 390, 'no horizontal scrolling at 390 px', scrollW);
    await shot('bridge-ko');
  });

  await step('pay with the second method', async () => {
    await Promise.all([page.waitForNavigation(), page.locator('button.pay-method').nth(1).click()]);
    ok((await page.locator('h1.success').innerText()).includes('결제가 완료되었습니다'), 'success page shows');
    impUid = (await page.locator('.row.imp-uid span').nth(1).innerText()).trim();
    ok(/^imp_\d{12}$/.test(impUid), 'success page shows the imp_uid', impUid);
    ok((await page.locator('.row.pay-with').innerText()).includes('카카오페이'), 'success page names the method');
    console.log(`# paid_ko=${impUid}`);
    await shot('success-ko');
  });

  await step('webhook arrives', async () => {
    const hits = await inboxFor(impUid);
    ok(hits.length === 1, 'the webhook reached notice_url once', JSON.stringify(hits));
    const body = hits[0] && JSON.parse(hits[0].body);
    ok(body && body.status === 'paid' && body.imp_uid === impUid, 'the webhook says paid for this imp_uid',
      hits[0] && hits[0].body);
  });

  await step('reopening a paid link', async () => {
    const res = await page.goto(env('E2E_LINK_KO'));
    ok(res.status() === 200 && await page.locator('h1.paid').count() === 1, 'a paid link says it is paid');
    await shot('paid-ko');
  });

  await step('bridge page (en, USD)', async () => {
    const res = await page.goto(env('E2E_LINK_EN'));
    ok(res.status() === 200, 'English bridge page answers 200', res.status());
    ok(await page.locator('html').getAttribute('lang') === 'en', 'bridge page is in English');
    ok((await page.locator('.amount').innerText()).trim() === '$12.50', 'amount reads $12.50',
      await page.locator('.amount').innerText());
    ok((await page.locator('h2').innerText()).includes('Choose how to pay'), 'English texts');
    await shot('bridge-en');
  });

  await step('direct link', async () => {
    const res = await page.goto(env('E2E_LINK_DIRECT'));
    ok(res.status() === 200 && await page.locator('body.direct').count() === 1,
      'a direct link opens the payment step');
    ok(await page.locator('button.pay-method').count() === 1, 'the payment step has one button');
    await shot('direct-ko');
    await Promise.all([page.waitForNavigation(), page.locator('button.pay-method').click()]);
    const uid = (await page.locator('.row.imp-uid span').nth(1).innerText()).trim();
    ok(/^imp_\d{12}$/.test(uid), 'the direct payment succeeds', uid);
    console.log(`# paid_direct=${uid}`);
  });

  await step('expired page (ko, deactivated)', async () => {
    const res = await page.goto(env('E2E_EXPIRED_KO'));
    ok(res.status() === 410, 'a deactivated link answers 410', res.status());
    ok((await page.locator('h1.expired').innerText()).includes('만료된 결제 링크입니다'), 'expired page in Korean');
    ok(await page.locator('button').count() === 0, 'an expired page has no pay button');
    await shot('expired-ko');
  });

  await step('expired page (en, past expired_at)', async () => {
    const res = await page.goto(env('E2E_EXPIRED_EN'));
    ok(res.status() === 410, 'a link past expired_at answers 410', res.status());
    ok((await page.locator('h1.expired').innerText()).includes('This payment link has expired'),
      'expired page in English');
    await shot('expired-en');
  });

  ok(outside.length === 0, 'the pages load nothing from outside the sandbox', outside.join(' '));
} finally {
  await context.close();
  rmSync(userDataDir, { recursive: true, force: true });
}
console.log(`1..${n}`);
process.exit(failed ? 1 : 0);
