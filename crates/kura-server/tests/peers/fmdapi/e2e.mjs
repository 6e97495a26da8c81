// End-to-end check of Kura's FileMaker Data API with the unmodified npm client
// @proofgeist/fmdapi (its FetchAdapter: username and password against any host).
//
// Run after `npm ci` in this directory (`cargo xtask test` does it):
//
//     node crates/kura-server/tests/peers/fmdapi/e2e.mjs
//
// Target, from the environment:
//   KURA_FM_URL               https://127.0.0.1:PORT (no trailing slash)
//   KURA_FM_CA                PEM file of the CA that signed the server certificate; the script
//                             restarts node with NODE_EXTRA_CA_CERTS set to it (node reads that
//                             variable only at start)
//   KURA_FM_DB                database name (default: Contacts)
//   KURA_FM_USER / KURA_FM_PASSWORD                  app account with full access
//   KURA_FM_LIMITED_USER / KURA_FM_LIMITED_PASSWORD  app account with the limited set
//   KURA_FM_SCRIPT            script that returns its parameter (default: Echo)
//
// Fixture app the server must host (created before this runs):
//   database `Contacts`
//     table/layout `contacts` with fields
//       id          number, auto-enter serial
//       first_name  text
//       last_name   text
//       email       text
//       age         number
//       born        date
//       notes       text
//       photo       container
//       created_at  timestamp, auto-enter creation timestamp
//     and a portal `phones` showing related `phones` records (phones::number, phones::kind);
//       phones::kind uses the value list `kinds`
//     table/layout `phones` with fields number (text), kind (text) and the key that relates it
//       to contacts (the relationship creates the related record on portal writes)
//     value list `kinds` (custom: home, work, mobile)
//     script `Echo`: returns its script parameter as the script result
//   accounts
//     admin    full access
//     limited  privilege set that may view `contacts` records but not edit them, and has no
//              access to the field `email`
//
// Every check prints one line; the first failure prints the server's last response and exits 1.
// The records this run creates carry a random tag in last_name and are deleted at the end.

import { spawnSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { fileURLToPath } from "node:url";

function env(name, fallback) {
  const value = process.env[name] ?? fallback;
  if (value === undefined) {
    console.log(`FAIL environment: ${name} is not set`);
    process.exit(2);
  }
  return value;
}

const CA = env("KURA_FM_CA");
if (process.env.NODE_EXTRA_CA_CERTS !== CA) {
  // Node adds extra trusted CAs only when it starts, so run again with the variable set.
  const child = spawnSync(process.execPath, [fileURLToPath(import.meta.url)], {
    env: { ...process.env, NODE_EXTRA_CA_CERTS: CA },
    stdio: "inherit",
  });
  process.exit(child.status ?? 1);
}

const { DataApi, FetchAdapter, FileMakerError } = await import("@proofgeist/fmdapi");
const { default: memoryStore } = await import("@proofgeist/fmdapi/tokenStore/memory.js");

const URL_BASE = env("KURA_FM_URL").replace(/\/+$/, "");
const DB = env("KURA_FM_DB", "Contacts");
const USER = env("KURA_FM_USER");
const PASSWORD = env("KURA_FM_PASSWORD");
const LIMITED_USER = env("KURA_FM_LIMITED_USER");
const LIMITED_PASSWORD = env("KURA_FM_LIMITED_PASSWORD");
const SCRIPT = env("KURA_FM_SCRIPT", "Echo");
// FileMaker's codes when a privilege set forbids an edit: 200 "Record access is denied" for the
// record, 201 "Field cannot be modified" for a field.
const DENIED_EDIT_CODES = ["200", "201"];

// Observe (not alter) every HTTP exchange, so a failure can show the server's answer.
const realFetch = globalThis.fetch;
let last = null;
const requests = [];
globalThis.fetch = async (input, init = {}) => {
  const res = await realFetch(input, init);
  const type = res.headers.get("content-type") ?? "";
  const body = type.startsWith("application/json")
    ? await res.clone().text()
    : `<${(await res.clone().arrayBuffer()).byteLength} bytes>`;
  last = { method: init.method ?? "GET", url: String(input), status: res.status, body };
  requests.push(last);
  return res;
};

let passed = 0;

function fail(name, detail) {
  console.log(`FAIL ${name}: ${detail}`);
  const shown = last
    ? `${last.method} ${last.url} -> HTTP ${last.status}: ${last.body.slice(0, 2000)}`
    : "(no response yet)";
  console.log(`     last server response: ${shown}`);
  process.exit(1);
}

function check(name, condition, detail = "condition false") {
  if (!condition) fail(name, typeof detail === "string" ? detail : JSON.stringify(detail));
  passed += 1;
  console.log(`ok   ${name}`);
}

async function expectFmError(name, codes, call) {
  const wanted = Array.isArray(codes) ? codes : [codes];
  try {
    await call();
  } catch (e) {
    if (!(e instanceof FileMakerError)) fail(name, `expected FileMaker error ${wanted}, got ${e}`);
    check(name, wanted.includes(e.code), `expected code ${wanted}, got ${e.code}`);
    return e;
  }
  fail(name, `expected FileMaker error ${wanted}, the call succeeded`);
  return null;
}

function names(entries, folderKey) {
  return (entries ?? []).flatMap((e) =>
    e.isFolder ? names(e[folderKey], folderKey) : [e.name],
  );
}

function client(username, password, tokenStore = memoryStore()) {
  const adapter = new FetchAdapter({
    server: URL_BASE,
    db: DB,
    auth: { username, password },
    tokenStore,
  });
  return { adapter, api: DataApi({ adapter, layout: "contacts" }), tokenStore };
}

async function main() {
  const tag = `Zq${randomBytes(5).toString("hex")}`;
  const tokenKey = `${URL_BASE}/${DB}`;
  const mine = (criteria = {}) => ({ ...criteria, last_name: `==${tag}` });

  // --- Sign-in ---------------------------------------------------------------------------------
  const bad = client(USER, `${PASSWORD}x`);
  await expectFmError("login with a wrong password is 212", "212", () => bad.api.layouts());
  check("bad login is HTTP 401", last.status === 401);

  const { adapter, api, tokenStore } = client(USER, PASSWORD);
  const layouts = names((await api.layouts()).layouts, "folderLayoutNames");
  const login = requests.find((r) => r.method === "POST" && /\/sessions$/.test(r.url) && r.status === 200);
  check("login answered (token read from X-FM-Data-Access-Token)", Boolean(login));
  check("layouts lists contacts and phones",
    layouts.includes("contacts") && layouts.includes("phones"), layouts);
  const token = await tokenStore.getToken(tokenKey);
  check("token cached", typeof token === "string" && token.length > 0);

  // --- Metadata --------------------------------------------------------------------------------
  const meta = await api.layoutMetadata();
  const fields = Object.fromEntries(meta.fieldMetaData.map((f) => [f.name, f]));
  const wanted = ["id", "first_name", "last_name", "email", "age", "born", "notes", "photo", "created_at"];
  check("layout metadata lists the fields", wanted.every((f) => f in fields), Object.keys(fields));
  check("metadata field types",
    fields.age.result === "number" && fields.born.result === "date" &&
      fields.photo.result === "container" && fields.created_at.result === "timeStamp",
    wanted.map((f) => `${f}:${fields[f].result}`).join(" "));
  check("metadata lists the phones portal", "phones" in meta.portalMetaData, meta.portalMetaData);
  const kinds = (meta.valueLists ?? []).find((v) => v.name === "kinds");
  check("metadata carries the value list kinds",
    kinds && ["home", "work", "mobile"].every((k) => kinds.values.some((v) => v.value === k)),
    meta.valueLists ?? "none");
  const scripts = names((await api.scripts()).scripts, "folderScriptNames");
  check("scripts lists the echo script", scripts.includes(SCRIPT), scripts);

  // --- Create ----------------------------------------------------------------------------------
  const people = [
    ["Ada", 20, "ada@example.test", "01/15/2000", `first ${tag}`],
    ["Bob", 30, "bob@example.test", "02/20/1990", `dup ${tag}`],
    ["Cy", 40, "cy@example.test", "03/25/1980", `dup ${tag}`],
    ["Dee", 50, "dee@example.test", "04/30/1970", `fourth ${tag}`],
    ["Eve", 60, "eve@example.test", "05/05/1960", `fifth ${tag}`],
    ["Fay", 70, "", "06/10/1950", `sixth ${tag}`],
  ];
  const ids = {};
  for (const [first, age, email, born, notes] of people) {
    const portalData = first === "Ada"
      ? { phones: [
          { "phones::number": "555-0101", "phones::kind": "home" },
          { "phones::number": "555-0102", "phones::kind": "work" },
        ] }
      : undefined;
    const created = await api.create({
      fieldData: { first_name: first, last_name: tag, email, age, born, notes },
      ...(portalData ? { portalData } : {}),
    });
    check(`create ${first}`,
      typeof created.recordId === "string" && Number(created.recordId) > 0 && created.modId === "0",
      created);
    ids[first] = created.recordId;
  }

  // --- Read ------------------------------------------------------------------------------------
  const got = await api.get({ recordId: ids.Ada });
  const ada = got.data[0];
  check("get one: recordId and modId are strings",
    typeof ada.recordId === "string" && typeof ada.modId === "string", ada);
  check("get one: dataInfo counts are numbers",
    ["totalRecordCount", "foundCount", "returnedCount"].every((k) => typeof got.dataInfo[k] === "number"),
    got.dataInfo);
  const f = ada.fieldData;
  check("get one: field values",
    f.first_name === "Ada" && f.last_name === tag && f.email === "ada@example.test" &&
      Number(f.age) === 20 && f.born === "01/15/2000", f);
  check("get one: creation timestamp set",
    /^\d{2}\/\d{2}\/\d{4} \d{2}:\d{2}:\d{2}$/.test(String(f.created_at)), f.created_at);
  const phones = ada.portalData.phones ?? [];
  check("get one: portal rows",
    JSON.stringify(phones.map((p) => p["phones::number"]).sort()) === '["555-0101","555-0102"]',
    ada.portalData);
  check("get one: portal rows have string recordIds",
    phones.every((p) => typeof p.recordId === "string"), phones);

  // --- Range -----------------------------------------------------------------------------------
  const top = await api.list({ limit: 3, sort: [{ fieldName: "id", sortOrder: "descend" }] });
  check("range sorted and limited",
    top.data.length === 3 && top.data[0].recordId === ids.Fay && top.data[1].recordId === ids.Eve,
    top.data.map((r) => r.recordId));
  const second = await api.list({ limit: 2, offset: 2, sort: { fieldName: "id", sortOrder: "descend" } });
  check("range offset", second.data.map((r) => r.recordId).join() === [ids.Eve, ids.Dee].join(),
    second.data.map((r) => r.recordId));
  check("range dataInfo", second.dataInfo.returnedCount === 2 && second.dataInfo.foundCount >= 6,
    second.dataInfo);
  const ranged = await api.list({
    limit: 1, sort: [{ fieldName: "id", sortOrder: "descend" }], offset: 6,
    portalRanges: { phones: { offset: 2, limit: 1 } },
  });
  check("range with a portal range",
    ranged.data[0]?.recordId === ids.Ada && ranged.data[0].portalData.phones.length === 1,
    ranged.data[0] ?? "no record");

  // --- Edit and modId --------------------------------------------------------------------------
  const edited = await api.update({ recordId: ids.Bob, modId: 0, fieldData: { email: "bob2@example.test" } });
  check("edit with the current modId 0", typeof edited.modId === "string" && Number(edited.modId) > 0, edited);
  await expectFmError("edit with a stale modId is 306", "306", () =>
    api.update({ recordId: ids.Bob, modId: 0, fieldData: { email: "stale@example.test" } }));
  check("stale edit is HTTP 500", last.status === 500);
  const bob = (await api.get({ recordId: ids.Bob })).data[0];
  check("stale edit changed nothing",
    bob.fieldData.email === "bob2@example.test" && bob.modId === edited.modId, bob);
  const again = await api.update({ recordId: ids.Bob, modId: Number(bob.modId), fieldData: { notes: `dup ${tag}` } });
  check("edit with the current modId", Number(again.modId) > Number(bob.modId), again);

  const first = [...phones].sort((a, b) => a["phones::number"].localeCompare(b["phones::number"]))[0];
  await api.update({
    recordId: ids.Ada,
    fieldData: {},
    portalData: { phones: [
      { recordId: first.recordId, "phones::kind": "mobile" },
      { "phones::number": "555-0103", "phones::kind": "work" },
    ] },
  });
  const rows = Object.fromEntries(
    (await api.get({ recordId: ids.Ada })).data[0].portalData.phones.map((p) => [p["phones::number"], p["phones::kind"]]),
  );
  check("portal edit and portal create applied",
    Object.keys(rows).length === 3 && rows["555-0101"] === "mobile" &&
      rows["555-0102"] === "work" && rows["555-0103"] === "work",
    rows);

  // --- Find ------------------------------------------------------------------------------------
  const found = async (query, extra = {}) =>
    (await api.find({ query, limit: 100, ...extra })).data.map((r) => r.fieldData.first_name);
  const sorted = (a) => [...a].sort().join();

  check("find == exact", (await found(mine({ first_name: "==Bob" }))).join() === "Bob");
  check("find ... range", sorted(await found(mine({ age: "30...50" }))) === "Bob,Cy,Dee");
  check("find <", sorted(await found(mine({ age: "<40" }))) === "Ada,Bob");
  check("find >=", sorted(await found(mine({ age: ">=50" }))) === "Dee,Eve,Fay");
  check("find criterion as a JSON number", (await found(mine({ age: 60 }))).join() === "Eve");
  check("find * wildcard", (await found(mine({ first_name: "D*" }))).join() === "Dee");
  check("find * alone is not empty", sorted(await found(mine({ email: "*" }))) === "Ada,Bob,Cy,Dee,Eve");
  check("find = alone is empty", (await found(mine({ email: "=" }))).join() === "Fay");
  check("find ! duplicates", sorted(await found(mine({ notes: "!" }))) === "Bob,Cy");
  check("find OR of requests",
    sorted(await found([mine({ first_name: "==Ada" }), mine({ first_name: "==Eve" })])) === "Ada,Eve");
  check("find with omit",
    sorted(await found([mine(), { age: ">=60", omit: "true" }])) === "Ada,Bob,Cy,Dee");
  check("find sort (one object) descend",
    (await found(mine(), { sort: { fieldName: "age", sortOrder: "descend" } })).join() === "Fay,Eve,Dee,Cy,Bob,Ada");
  const page = await api.find({ query: mine(), sort: [{ fieldName: "age", sortOrder: "ascend" }], offset: 3, limit: 2 });
  check("find offset/limit as numbers", page.data.map((r) => r.fieldData.first_name).join() === "Cy,Dee",
    page.data.map((r) => r.fieldData.first_name));
  check("find dataInfo counts", page.dataInfo.foundCount === 6 && page.dataInfo.returnedCount === 2, page.dataInfo);
  const all = await api.findAll({ query: mine(), limit: 4 });
  check("findAll pages through foundCount", all.length === 6, all.length);
  const withPortal = await api.find({ query: mine({ first_name: "==Ada" }), portalRanges: { phones: { limit: 1 } } });
  check("find with a portal range in the URL", withPortal.data[0].portalData.phones.length === 1,
    withPortal.data[0].portalData);
  await expectFmError("find with no match is 401", "401", () => api.find({ query: mine({ first_name: "==Nobody" }) }));
  check("no match is HTTP 500", last.status === 500);
  const empty = await api.find({ query: mine({ first_name: "==Nobody" }), ignoreEmptyResult: true });
  check("ignoreEmptyResult turns 401 into []", empty.data.length === 0);
  check("maybeFindFirst gives null", (await api.maybeFindFirst({ query: mine({ first_name: "==Nobody" }) })) === null);
  await expectFmError("find on an unknown field is 102", "102", () => api.find({ query: { no_such_field: "x" } }));
  await expectFmError("unknown layout is 105", "105", () => api.list({ layout: `no such layout ${tag}`, limit: 1 }));
  await expectFmError("unknown record is 101", "101", () => api.get({ recordId: 999999999 }));

  // --- Containers ------------------------------------------------------------------------------
  const payload = Buffer.concat([Buffer.from("\x89PNG\r\n\x1a\n", "latin1"), randomBytes(300)]);
  await api.containerUpload({
    recordId: ids.Cy,
    containerFieldName: "photo",
    file: new Blob([payload], { type: "image/png" }),
  });
  check("container upload (no repetition in the path)", last.status === 200);
  const url = (await api.get({ recordId: ids.Cy })).data[0].fieldData.photo;
  check("container field holds a URL", typeof url === "string" && url.startsWith("https://"), url);
  const download = await fetch(url);
  const bytes = Buffer.from(await download.arrayBuffer());
  check("container download without credentials returns the bytes",
    download.status === 200 && bytes.equals(payload), `HTTP ${download.status}, ${bytes.length} bytes`);

  // --- Scripts ---------------------------------------------------------------------------------
  const ran = await adapter.executeScript({ layout: "contacts", script: SCRIPT, scriptParam: `hello ${tag}` });
  check("script with a parameter", ran.scriptResult === `hello ${tag}` && ran.scriptError === "0", ran);
  const afterFind = await api.find({ query: mine({ first_name: "==Ada" }), script: SCRIPT, "script.param": "after find" });
  check("script after a find", afterFind.scriptResult === "after find" && afterFind.scriptError === "0",
    { scriptResult: afterFind.scriptResult, scriptError: afterFind.scriptError });
  await expectFmError("unknown script is 104", "104", () =>
    adapter.executeScript({ layout: "contacts", script: `No such script ${tag}` }));

  // --- Restricted privilege set ----------------------------------------------------------------
  const limited = client(LIMITED_USER, LIMITED_PASSWORD);
  const seen = (await limited.api.get({ recordId: ids.Ada })).data[0].fieldData;
  check("limited: email absent from fieldData", !("email" in seen) && seen.first_name === "Ada", seen);
  const seenFind = await limited.api.find({ query: mine(), limit: 10 });
  check("limited: email absent from find results", seenFind.data.every((r) => !("email" in r.fieldData)));
  await expectFmError("limited: edit refused", DENIED_EDIT_CODES, () =>
    limited.api.update({ recordId: ids.Ada, fieldData: { first_name: "Mallory" } }));
  check("limited: refused edit changed nothing",
    (await api.get({ recordId: ids.Ada })).data[0].fieldData.first_name === "Ada");
  await limited.adapter.disconnect();

  // --- Delete ----------------------------------------------------------------------------------
  for (const [name, recordId] of Object.entries(ids)) {
    await api.delete({ recordId });
    check(`delete ${name}`, last.status === 200);
  }
  await expectFmError("get a deleted record is 101", "101", () => api.get({ recordId: ids.Ada }));

  // --- Log out, the dead token, and the client's own re-login ----------------------------------
  const live = await tokenStore.getToken(tokenKey);
  await adapter.disconnect();
  check("logout", last.method === "DELETE" && last.status === 200);
  const dead = await fetch(`${URL_BASE}/fmi/data/vLatest/databases/${encodeURIComponent(DB)}/layouts`, {
    headers: { Authorization: `Bearer ${live}` },
  });
  const deadBody = await dead.json().catch(() => ({}));
  check("dead token is HTTP 401 with 952",
    dead.status === 401 && deadBody?.messages?.[0]?.code === "952", deadBody);
  tokenStore.setToken(tokenKey, live);
  const relogged = names((await api.layouts()).layouts, "folderLayoutNames");
  const fresh = await tokenStore.getToken(tokenKey);
  check("client re-logs in after 952", relogged.includes("contacts") && fresh !== live);
  await adapter.disconnect();

  console.log(`fmdapi e2e: ${passed} checks passed`);
}

try {
  await main();
} catch (e) {
  fail("unexpected client error", e instanceof FileMakerError ? `FileMaker ${e.code}: ${e.message}` : String(e?.stack ?? e));
}
