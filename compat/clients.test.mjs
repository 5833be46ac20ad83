// REST V1 compatibility: the published npm clients, unmodified, against the
// sandbox, with no proxy in between. Each test asserts what the library
// returns (its own objects, errors and types), not only the HTTP status.
//
// Started by compat/run.lua (scripts/compat), which starts the sandbox
// without a key pair (so it makes one up) and passes:
//   COMPAT_SANDBOX_URL   the sandbox (link API, REST V1, admin API)
//   COMPAT_IMP_KEY, COMPAT_IMP_SECRET   the pair it made up
// Prints TAP on stdout ("ok N - ...", "not ok N - ...").
import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);
const { Iamport, Request } = require('iamport-rest-client-nodejs');
const { Iamporter, IamporterError } = require('iamporter');
const { Authenticate, Payments, Prepare } = Request;

const env = (k) => {
  const v = process.env[k];
  if (!v) { console.log(`Bail out! ${k} is not set`); process.exit(2); }
  return v;
};
const BASE = env('COMPAT_SANDBOX_URL');
const KEY = env('COMPAT_IMP_KEY');
const SECRET = env('COMPAT_IMP_SECRET');

let n = 0;
let failed = 0;
function ok(cond, name, detail) {
  n += 1;
  if (cond) { console.log(`ok ${n} - ${name}`); return true; }
  failed += 1;
  console.log(`not ok ${n} - ${name}`);
  if (detail !== undefined) console.log(`# ${String(typeof detail === 'string' ? detail : JSON.stringify(detail)).split('\n').join('\n# ')}`);
  return false;
}
async function step(name, fn) {
  try { await fn(); } catch (e) {
    const data = e && e.response && e.response.data;
    ok(false, `${name} (threw)`, `${e && e.stack || e}${data ? `\n${JSON.stringify(data)}` : ''}`);
  }
}
// The rejection of a promise (or undefined when it resolved).
async function rejection(p) {
  try { await p; return undefined; } catch (e) { return e; }
}

// ---------------------------------------------------------------------------
// fixtures, through the sandbox's own link API and admin API

let seq = 0;
const uid = (p) => `${p}-${Date.now()}-${++seq}`;

async function createLink(over = {}) {
  const info = {
    title: 'compat', user_code: 'imp12345678', amount: 10000, merchant_uid: uid('compat'),
    name: 'Item', currency: 'KRW', buyer_tel: '010-1234-5678',
    pay_methods: [{ pg: 'html5_inicis.INIpayTest', pay_method: 'card', label: 'Card' }], ...over,
  };
  const res = await fetch(`${BASE}/api/supplements/v1/link/payment`, {
    method: 'POST', headers: { 'Content-Type': 'application/json;charset=UTF-8' },
    body: JSON.stringify({ payment_info: JSON.stringify(info), expired_at: Math.floor(Date.now() / 1000) + 3600 }),
  });
  const body = await res.json();
  if (!body.shortenedUrl) throw new Error(`create: ${JSON.stringify(body)}`);
  return { id: body.shortenedUrl.split('/').pop(), info };
}

async function admin(path, body) {
  const res = await fetch(`${BASE}/__sandbox/${path}`, {
    method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(body),
  });
  const t = await res.json();
  if (res.status !== 200) throw new Error(`admin ${path}: ${JSON.stringify(t)}`);
  return t;
}

async function paid(over) {
  const link = await createLink(over);
  const r = await admin('pay', { id: link.id });
  return { imp_uid: r.imp_uid, merchant_uid: link.info.merchant_uid, amount: link.info.amount };
}

// ---------------------------------------------------------------------------

async function restClientNodejs() {
  const T = 'iamport-rest-client-nodejs';
  const iamport = new Iamport({ apiKey: KEY, apiSecret: SECRET, baseUrl: BASE });
  const a = await paid({ amount: 10000, custom_data: { order: 1 } });
  const b = await paid({ amount: 2000 });

  await step(`${T}: getToken`, async () => {
    const res = await Authenticate.getToken({ imp_key: KEY, imp_secret: SECRET }).request(iamport);
    const r = res.data.response;
    ok(typeof r.access_token === 'string' && r.access_token.length > 0, `${T}: getToken gives an access_token`);
    ok(r.expired_at instanceof Date && r.expired_at.getTime() > Date.now(),
      `${T}: getToken's expired_at becomes a future Date`, r.expired_at);
  });

  await step(`${T}: lookup by imp_uid`, async () => {
    const res = await Payments.getByImpUid({ imp_uid: a.imp_uid }).request(iamport);
    const p = res.data.response;
    ok(res.data.code === 0 && p.imp_uid === a.imp_uid && p.amount === 10000 && p.status === 'paid',
      `${T}: getByImpUid gives the paid payment`, p);
    ok(p.paid_at instanceof Date && p.failed_at === 0 && p.cancelled_at === 0,
      `${T}: times are Dates, and 0 where not reached`, p);
    ok(p.custom_data === '{"order":1}' && p.pg_provider === 'html5_inicis' && p.pg_id === 'INIpayTest',
      `${T}: custom_data is a string; pg split into pg_provider and pg_id`, p);
    ok(Array.isArray(p.cancel_history) && p.cancel_history.length === 0 && p.escrow === false
      && p.card_quota === 0 && p.vbank_num === null, `${T}: V1 types for the other fields`, p);
  });

  await step(`${T}: lookup by merchant_uid`, async () => {
    const res = await Payments.getByMerchantUid({ merchant_uid: a.merchant_uid, status: 'paid', sorting: '-started' })
      .request(iamport);
    ok(res.data.response.imp_uid === a.imp_uid, `${T}: getByMerchantUid finds the order's payment`, res.data);
    const all = await Payments.getByMerchantUids({ merchant_uid: a.merchant_uid, status: 'all', page: 1, sorting: '-started' })
      .request(iamport);
    ok(all.data.response.total === 1 && all.data.response.list[0].imp_uid === a.imp_uid,
      `${T}: getByMerchantUids pages the order's payments`, all.data);
  });

  await step(`${T}: list by imp_uid[]`, async () => {
    const missing = 'imp_000000000404';
    const res = await Payments.getByImpUids({ imp_uid: [a.imp_uid, b.imp_uid, missing] }).request(iamport);
    const found = res.data.response.map((p) => p.imp_uid).sort();
    ok(res.status === 207 && found.length === 2 && found.includes(a.imp_uid) && found.includes(b.imp_uid),
      `${T}: getByImpUids lists the found ones (207)`, res.data);
    ok(Array.isArray(res.data.failed) && res.data.failed.length === 1 && res.data.failed[0] === missing,
      `${T}: getByImpUids reports the missing one as failed`, res.data.failed);
  });

  await step(`${T}: status paging`, async () => {
    const p1 = await Payments.getByStatus({ status: 'paid', page: 1, limit: 1, sorting: '-started' }).request(iamport);
    const r1 = p1.data.response;
    ok(r1.total >= 2 && r1.list.length === 1 && r1.previous === 0 && r1.next === 2,
      `${T}: getByStatus page 1 of paid payments`, r1);
    const p2 = await Payments.getByStatus({ status: 'paid', page: 2, limit: 1, sorting: '-started' }).request(iamport);
    ok(p2.data.response.previous === 1 && p2.data.response.list[0].imp_uid !== r1.list[0].imp_uid,
      `${T}: getByStatus page 2 holds the next one`, p2.data.response);
  });

  await step(`${T}: prepare`, async () => {
    const muid = uid('prep-node');
    const res = await Prepare.postAmount({ merchant_uid: muid, amount: 5000 }).request(iamport);
    ok(res.data.response.merchant_uid === muid && res.data.response.amount === 5000, `${T}: postAmount registers`, res.data);
    const got = await Prepare.getAmount({ merchant_uid: muid }).request(iamport);
    ok(got.data.response.amount === 5000, `${T}: getAmount reads it back`, got.data);
  });

  await step(`${T}: refund`, async () => {
    const bal = await Payments.getAmountByImpUid({ imp_uid: a.imp_uid }).request(iamport);
    ok(bal.data.response.amount === 10000 && Array.isArray(bal.data.response.histories),
      `${T}: getAmountByImpUid gives the balance`, bal.data);
    const part = await Payments.cancel({ imp_uid: a.imp_uid, amount: 4000, checksum: 10000, reason: 'partial' })
      .request(iamport);
    const p = part.data.response;
    ok(p.status === 'paid' && p.cancel_amount === 4000 && p.cancel_history.length === 1,
      `${T}: a partial cancel with checksum`, p);
    const full = await Payments.cancel({ imp_uid: a.imp_uid, checksum: 6000, reason: 'rest' }).request(iamport);
    ok(full.data.response.status === 'cancelled' && full.data.response.cancel_amount === 10000
      && full.data.response.cancelled_at instanceof Date, `${T}: cancelling the rest`, full.data.response);
    const again = await rejection(Payments.cancel({ imp_uid: a.imp_uid }).request(iamport));
    ok(again && again.response.data.code === 1 && again.response.data.message === '이미 전액취소된 주문입니다.',
      `${T}: a second full cancel is refused with code 1`, again && again.response);
  });

  await step(`${T}: a bad key`, async () => {
    const bad = new Iamport({ apiKey: KEY, apiSecret: 'not-the-secret', baseUrl: BASE });
    const e = await rejection(Payments.getByImpUid({ imp_uid: b.imp_uid }).request(bad));
    ok(e && e.response && e.response.status === 401 && e.response.data.code === -1,
      `${T}: a wrong secret is refused with 401`, e && e.response && e.response.data);
  });
}

async function iamporter() {
  const T = 'iamporter';
  const client = new Iamporter({ apiKey: KEY, secret: SECRET, host: BASE });
  const a = await paid({ amount: 30000 });

  await step(`${T}: getToken`, async () => {
    const res = await client.getToken();
    ok(res.status === 200 && typeof res.data.access_token === 'string' && res.data.expired_at > res.data.now,
      `${T}: getToken gives a token`, res);
  });

  await step(`${T}: lookups`, async () => {
    const byImp = await client.findByImpUid(a.imp_uid);
    ok(byImp.data.imp_uid === a.imp_uid && byImp.data.amount === 30000 && typeof byImp.data.paid_at === 'number',
      `${T}: findByImpUid (raw Authorization header)`, byImp.data);
    const unknown = await client.findByImpUid('imp_000000000404');
    ok(unknown.status === 404 && unknown.message === '존재하지 않는 결제정보입니다.' && unknown.data === null,
      `${T}: findByImpUid of an unknown imp_uid resolves with V1's 404 message`, unknown);
    const byMuid = await client.findByMerchantUid(a.merchant_uid);
    ok(byMuid.data.imp_uid === a.imp_uid, `${T}: findByMerchantUid`, byMuid.data);
    const all = await client.findAllByMerchantUid(a.merchant_uid);
    ok(all.data.total === 1 && all.data.list[0].imp_uid === a.imp_uid,
      `${T}: findAllByMerchantUid (no status: a trailing slash)`, all.data);
  });

  await step(`${T}: list and status paging`, async () => {
    const res = await client.findAllByStatus('paid', { page: 1, limit: 2 });
    ok(res.data.total >= 2 && res.data.list.length === 2 && res.data.list.every((p) => p.status === 'paid'),
      `${T}: findAllByStatus pages`, res.data);
    const e = await rejection(client.findAllByStatus('nonsense'));
    ok(e instanceof IamporterError && e.message === '지원되지 않는 상태값입니다.',
      `${T}: an unknown status is refused with V1's message`, e && e.message);
  });

  await step(`${T}: prepare`, async () => {
    const muid = uid('prep-iamporter');
    const res = await client.createPreparedPayment({ merchant_uid: muid, amount: 7000 });
    ok(res.data.amount === 7000, `${T}: createPreparedPayment`, res.data);
    const got = await client.getPreparedPayment(muid);
    ok(got.data.merchant_uid === muid && got.data.amount === 7000, `${T}: getPreparedPayment`, got.data);
    const none = await client.getPreparedPayment(uid('nobody'));
    ok(none.status === 404 && none.message === '사전등록된 결제정보가 존재하지 않습니다.',
      `${T}: getPreparedPayment of an unknown order`, none);
    // paying that order with another amount fails, as V1
    const link = await createLink({ merchant_uid: muid, amount: 9000 });
    const r = await admin('pay', { id: link.id });
    const p = await client.findByImpUid(r.imp_uid);
    ok(p.data.status === 'failed' && typeof p.data.fail_reason === 'string',
      `${T}: a payment for another amount than prepared fails`, p.data);
  });

  await step(`${T}: refund`, async () => {
    const part = await client.cancelByImpUid(a.imp_uid, { amount: 10000, checksum: 30000, reason: 'partial' });
    ok(part.data.cancel_amount === 10000 && part.data.status === 'paid', `${T}: cancelByImpUid, partial`, part.data);
    const stale = await rejection(client.cancelByImpUid(a.imp_uid, { amount: 1000, checksum: 30000 }));
    ok(stale instanceof IamporterError && /checksum/.test(stale.message),
      `${T}: a stale checksum is refused`, stale && stale.message);
    const full = await client.cancelByMerchantUid(a.merchant_uid, { reason: 'rest' });
    ok(full.data.status === 'cancelled' && full.data.cancel_amount === 30000 && full.data.cancel_history.length === 2,
      `${T}: cancelByMerchantUid cancels the rest`, full.data);
    const again = await rejection(client.cancelByImpUid(a.imp_uid));
    ok(again instanceof IamporterError && again.message === '이미 전액취소된 주문입니다.',
      `${T}: a second full cancel is refused`, again && again.message);
    const none = await rejection(client.cancelByImpUid('imp_000000000404'));
    ok(none instanceof IamporterError && /취소할 결제건이 존재하지 않습니다/.test(none.message),
      `${T}: cancelling an unknown payment is refused`, none && none.message);
  });

  await step(`${T}: a bad key`, async () => {
    const bad = new Iamporter({ apiKey: 'imp_apiKey', secret: 'wrong', host: BASE });
    const e = await rejection(bad.findByImpUid(a.imp_uid));
    ok(e instanceof IamporterError && e.message === '아임포트 API 인증에 실패하였습니다.',
      `${T}: a made-up key pair is the only one accepted`, e && e.message);
  });
}

await step('iamport-rest-client-nodejs', restClientNodejs);
await step('iamporter', iamporter);
console.log(`1..${n}`);
process.exit(failed > 0 ? 1 : 0);
