// Drives the Kura Customer Console in Debian's Chromium (playwright-core),
// as a person would: first-operator setup with TOTP enrolment, sign-in with
// the second factor, teams, hosts, apps, invitations, CSRF refusal, and the
// way back to where one was after the session ended. TOTP codes come from
// the independent `otpauth` library, never from Kura.
//
// Environment: KURA_URL (https://127.0.0.1:port), KURA_SETUP_LINK,
// KURA_SHOTS (where page screenshots go), KURA_FAIL_SHOTS (failure shots).
import { chromium } from 'playwright-core';
import * as OTPAuth from 'otpauth';
import { mkdirSync, readFileSync } from 'node:fs';
import { X509Certificate, createHash } from 'node:crypto';
import { join } from 'node:path';

const base = process.env.KURA_URL;
const setupLink = process.env.KURA_SETUP_LINK;
const shots = process.env.KURA_SHOTS;
const failShots = process.env.KURA_FAIL_SHOTS || '.';
if (!base || !setupLink || !shots) throw new Error('KURA_URL, KURA_SETUP_LINK and KURA_SHOTS are required');
mkdirSync(shots, { recursive: true });
mkdirSync(failShots, { recursive: true });

const OPERATOR = { email: 'ops@kura.test', name: 'Olive Operator', password: 'correct horse battery staple 42' };
const OWNER = { email: 'owner@acme.test', name: 'Oscar Owner', password: 'another long owner passphrase 7' };

// Chromium trusts the test server's self-signed certificate by its public
// key (WebAuthn refuses pages with certificate errors).
const args = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking'];
if (process.env.KURA_CERT) {
  const spki = new X509Certificate(readFileSync(process.env.KURA_CERT)).publicKey.export({ type: 'spki', format: 'der' });
  args.push(`--ignore-certificate-errors-spki-list=${createHash('sha256').update(spki).digest('base64')}`);
}
const browser = await chromium.launch({ executablePath: '/usr/bin/chromium', args });

let failures = 0;
const pages = new Set();
async function scenario(name, fn) {
  try {
    await fn();
    console.log(`ok   ${name}`);
  } catch (e) {
    failures += 1;
    console.log(`FAIL ${name}: ${e.stack || e}`);
    for (const p of pages) {
      const file = join(failShots, `${name.replace(/\W+/g, '-')}-${Math.random().toString(36).slice(2, 6)}.png`);
      await p.screenshot({ path: file, fullPage: true }).catch(() => {});
      console.log(`     screenshot: ${file} (at ${p.url()})`);
    }
  }
}

async function newPage() {
  const context = await browser.newContext({ ignoreHTTPSErrors: !process.env.KURA_CERT, viewport: { width: 1280, height: 800 } });
  const page = await context.newPage();
  pages.add(page);
  // A form shown again with its errors answers 422, which Chromium logs.
  page.on('console', (m) => {
    if (m.type() === 'error' && !m.text().includes('status of 422')) console.log(`     browser console: ${m.text()}`);
  });
  return page;
}

function check(cond, message) { if (!cond) throw new Error(message); }

// Full-page screenshots of the current page at both widths.
async function shoot(page, name) {
  for (const width of [1280, 390]) {
    await page.setViewportSize({ width, height: width === 390 ? 844 : 800 });
    await page.screenshot({ path: join(shots, `${name}-${width}.png`), fullPage: true });
  }
  await page.setViewportSize({ width: 1280, height: 800 });
}

let totp;
let ownerTotp;
// A code for a time step the server has not seen yet (each is accepted
// once per account), from the operator's authenticator or another one.
const lastSteps = new Map();
async function freshCode(authenticator = totp) {
  for (;;) {
    const step = Math.floor(Date.now() / 1000 / 30);
    if (step > (lastSteps.get(authenticator) ?? -1)) { lastSteps.set(authenticator, step); return authenticator.generate(); }
    await new Promise((r) => setTimeout(r, 1000));
  }
}

const op = await newPage();
let recoveryCodes = [];
let teamUrl;
let inviteLink;

await scenario('first-operator setup with TOTP enrolment', async () => {
  await op.goto(setupLink);
  await shoot(op, 'setup');
  // A weak password is refused beside the field, the other input kept.
  await op.fill('#f-email', OPERATOR.email);
  await op.fill('#f-display_name', OPERATOR.name);
  await op.fill('#f-password', 'short');
  await op.click('button[type=submit]');
  check(await op.locator('#f-password-error').isVisible(), 'a weak password shows an error beside the field');
  check((await op.inputValue('#f-email')) === OPERATOR.email, 'the email is kept');
  check((await op.inputValue('#f-display_name')) === OPERATOR.name, 'the name is kept');
  await shoot(op, 'setup-error');
  await op.fill('#f-password', OPERATOR.password);
  await op.click('button[type=submit]');
  await op.waitForURL(/\/console\/mfa\/enrol/);
  await op.click('button[type=submit]');
  const secret = (await op.textContent('#totp-secret')).trim();
  check(/^[A-Z2-7]+=*$/.test(secret), `a base32 secret is shown (${secret})`);
  const uri = await op.getAttribute('#totp-uri', 'href');
  check(uri.startsWith('otpauth://totp/'), 'an otpauth URI is offered');
  totp = new OTPAuth.TOTP({ secret: OTPAuth.Secret.fromBase32(secret), digits: 6, period: 30, algorithm: 'SHA1' });
  // The QR code is an image the strict CSP lets the browser draw.
  const qrWidth = await op.locator('#totp-qr').evaluate((img) => img.complete ? img.naturalWidth : 0);
  check(qrWidth > 0, `the QR code image is drawn (${qrWidth})`);
  await shoot(op, 'enrol-totp');
  // A wrong code keeps the secret on screen and says what to do.
  await op.fill('#f-code', '000000');
  await op.click('button[type=submit]');
  check(await op.locator('#f-code-error').isVisible(), 'a wrong code shows an error');
  check((await op.textContent('#totp-secret')).trim() === secret, 'the secret is still shown');
  await op.fill('#f-code', await freshCode());
  await op.click('button[type=submit]');
  recoveryCodes = (await op.locator('#recovery-codes code').allTextContents()).map((c) => c.trim());
  check(recoveryCodes.length === 10, `ten recovery codes are shown (${recoveryCodes.length})`);
  await shoot(op, 'recovery-codes');
  await op.click('text=I have saved them');
  await op.waitForURL(`${base}/console/`);
  check(await op.locator('text=No teams yet').isVisible(), 'the empty state explains what to do');
  await shoot(op, 'home-empty');
});

await scenario('an operator creates a team and its owner invitation', async () => {
  await op.click('button:has-text("Create team")');
  check(await op.locator('#f-name-error').isVisible(), 'an empty name is refused beside the field');
  await op.fill('#f-name', 'Acme');
  await op.fill('#f-owner_email', OWNER.email);
  await op.click('button:has-text("Create team")');
  inviteLink = (await op.textContent('#invite-link')).trim();
  check(inviteLink.startsWith('/console/invitations/accept#'), `an invitation link is shown (${inviteLink})`);
  await shoot(op, 'home');
});

let owner;
let addressBookUrl;
let libraryUrl;
await scenario('the invited owner accepts and sees the team', async () => {
  owner = await newPage();
  await owner.goto(`${base}${inviteLink}`);
  check((await owner.inputValue('#f-token')).length > 20, 'the script copied the token from the link');
  await shoot(owner, 'accept-invitation');
  await owner.fill('#f-display_name', OWNER.name);
  await owner.fill('#f-password', OWNER.password);
  await owner.click('button[type=submit]');
  await owner.waitForURL(/\/console\/sign-in\?ok=joined/);
  await owner.fill('#f-email', OWNER.email);
  await owner.fill('#f-password', OWNER.password);
  await owner.click('button[type=submit]');
  await owner.waitForURL(`${base}/console/`);
  await owner.click('a:has-text("Acme")');
  teamUrl = owner.url();
  check(/\/console\/teams\/[0-9a-f-]+$/.test(teamUrl), `the team page opens (${teamUrl})`);
  check(await owner.locator('td:has-text("owner@acme.test")').isVisible(), 'the owner is a member');
  check(await owner.locator('text=No hosts yet').isVisible(), 'the empty state explains hosts');
  await shoot(owner, 'team-empty');
  // The invitation works once.
  const again = await newPage();
  await again.goto(`${base}${inviteLink}`);
  await again.fill('#f-display_name', 'Mallory');
  await again.fill('#f-password', 'yet another long passphrase 99');
  await again.click('button[type=submit]');
  check(await again.locator('#f-token-error').isVisible(), 'a used invitation is refused');
  await again.context().close();
  pages.delete(again);
});

await scenario('hosts and apps: bad input changes nothing, good input creates', async () => {
  await owner.fill('#f-name', 'Not A Host Name!');
  await owner.click('button:has-text("Create host")');
  check(await owner.locator('#f-name-error').isVisible(), 'a bad host name is refused beside the field');
  check((await owner.inputValue('#f-name')) === 'Not A Host Name!', 'the input is kept');
  check((await owner.locator('#hosts article.host').count()) === 0, 'no host was created');
  await shoot(owner, 'team-host-error');
  await owner.fill('#f-name', 'acme');
  await owner.click('button:has-text("Create host")');
  await owner.waitForURL(/ok=host-created/);
  check(await owner.locator('#hosts h3:has-text("acme")').isVisible(), 'the host is listed');
  await owner.fill('#f-app_name', 'Contacts');
  await owner.click('button:has-text("Create app")');
  await owner.waitForURL(/ok=app-created/);
  check(await owner.locator('.app-name:has-text("Contacts")').isVisible(), 'the app is listed');
  await shoot(owner, 'team');
  // A second host is renamed, then deleted by typing its name.
  await owner.fill('#f-name', 'spare');
  await owner.click('button:has-text("Create host")');
  await owner.waitForURL(/ok=host-created/);
  const spare = owner.locator('article.host', { hasText: 'spare' });
  await spare.locator('summary').click();
  await spare.locator('input[name^="rename-"]').fill('spare-two');
  await spare.locator('button:has-text("Rename host")').click();
  await owner.waitForURL(/ok=host-renamed/);
  check(await owner.locator('#hosts h3:has-text("spare-two")').isVisible(), 'the host is renamed');
});

await scenario('an app gets two tables, fields and a layout; rename, close, delete', async () => {
  await owner.goto(teamUrl);
  await owner.click('a.app-name:has-text("Contacts")');
  const appUrl = owner.url();
  check(await owner.locator('text=No tables yet').isVisible(), 'the empty schema explains what to do');
  await owner.fill('#f-table', 'contacts');
  await owner.click('button:has-text("Add table")');
  await owner.fill('#f-table', 'phones');
  await owner.click('button:has-text("Add table")');
  for (const [table, name, type] of [['contacts', 'name', 'text'], ['contacts', 'born', 'date'], ['phones', 'number', 'text']]) {
    await owner.selectOption('#f-field_table', table);
    await owner.fill('#f-field_name', name);
    await owner.selectOption('#f-field_type', type);
    await owner.click('button:has-text("Add field")');
    check(await owner.locator('#schema code').getByText(name, { exact: true }).isVisible(), `field ${name} is listed`);
  }
  // Broken JSON is refused beside the editor, the text kept, nothing changed.
  await owner.fill('#f-definition', '{ "tables": [ oops');
  await owner.click('button:has-text("Apply schema")');
  check(await owner.locator('#editor [role=alert]').isVisible(), 'bad JSON is refused');
  check((await owner.inputValue('#f-definition')).includes('oops'), 'the text is kept');
  await owner.goto(appUrl);
  const def = JSON.parse(await owner.inputValue('#f-definition'));
  check(def.tables.length === 2, `two tables (${def.tables.length})`);
  def.layouts = [{ name: 'Contacts', table: 'contacts' }];
  await owner.fill('#f-definition', JSON.stringify(def, null, 2));
  await owner.click('button:has-text("Apply schema")');
  check(await owner.locator('text=Schema applied').isVisible(), 'the schema is applied');
  check(await owner.locator('#layouts strong:has-text("Contacts")').isVisible(), 'the layout is listed');
  await shoot(owner, 'app');
  await owner.fill('#f-name', 'Address Book');
  await owner.click('button:has-text("Rename")');
  await owner.waitForURL(/ok=app-renamed/);
  check(await owner.locator('h1:has-text("Address Book")').isVisible(), 'renamed');
  await owner.click('button:has-text("Close app")');
  await owner.waitForURL(/ok=app-closed/);
  await owner.click('button:has-text("Open app")');
  await owner.waitForURL(/ok=app-opened/);
  addressBookUrl = appUrl;
});

await scenario('records: add, find, sort; a member with a restricted privilege set sees only what it allows', async () => {
  await owner.goto(teamUrl);
  await owner.fill('#f-app_name', 'Library');
  await owner.click('button:has-text("Create app")');
  await owner.click('a.app-name:has-text("Library")');
  libraryUrl = owner.url();
  const definition = {
    tables: [
      { name: 'books', fields: [{ name: 'title', type: 'text' }, { name: 'author', type: 'text' }, { name: 'price', type: 'number' }] },
      { name: 'loans', fields: [{ name: 'book', type: 'text' }, { name: 'due', type: 'date' }] },
    ],
    layouts: [{ name: 'Books', table: 'books' }, { name: 'Loans', table: 'loans' }],
    privilege_sets: [{ name: 'reader', extended: ['fmrest'], tables: { books: { view: 'all', fields: { price: 'none' } } } }],
  };
  await owner.fill('#f-definition', JSON.stringify(definition, null, 2));
  await owner.click('button:has-text("Apply schema")');
  check(await owner.locator('text=Schema applied').isVisible(), 'the library schema is applied');
  // The owner can open records once they have an app account.
  await owner.click('#layouts a:has-text("Browse records") >> nth=0');
  check(await owner.locator('text=no account in this app').isVisible(), 'without an app account the browser says what to do');
  await owner.goto(libraryUrl);
  await owner.selectOption('#f-account-email', OWNER.email);
  await owner.selectOption('#f-account-set', '[Full Access]');
  await owner.click('button:has-text("Add app account")');
  await owner.waitForURL(/ok=account-added/);
  await owner.click('#layouts a:has-text("Browse records") >> nth=0');
  const booksUrl = owner.url().split('?')[0];
  check(await owner.locator('#no-records').isVisible(), 'an empty layout says so');
  for (const [title, author, price] of [['Dune', 'Herbert', '12'], ['Emma', 'Austen', '8'], ['Ulysses', 'Joyce', '15']]) {
    await owner.fill('#f-field\\.title', title);
    await owner.fill('#f-field\\.author', author);
    await owner.fill('#f-field\\.price', price);
    await owner.click('button:has-text("Create record")');
    await owner.waitForURL(/ok=record-created/);
  }
  check((await owner.locator('#records tbody tr').count()) === 3, 'three records');
  // A bad value is refused with the Data API's message and the input kept.
  await owner.fill('#f-field\\.title', 'Priceless');
  await owner.fill('#f-field\\.price', 'not a number');
  await owner.click('button:has-text("Create record")');
  check(await owner.locator('#new-record #f-field\\.price-error').isVisible(), 'a non-number price is refused beside the field');
  check((await owner.inputValue('#f-field\\.title')) === 'Priceless', 'the input is kept');
  await owner.goto(booksUrl);
  check((await owner.locator('#records tbody tr').count()) === 3, 'still three records');
  await owner.selectOption('#f-find-field', 'title');
  await owner.fill('#f-find-value', '==Dune');
  await owner.click('button:has-text("Find")');
  check((await owner.locator('#records tbody tr').count()) === 1, 'the find returns Dune only');
  check((await owner.textContent('#records tbody tr')).includes('Herbert'), 'Dune by Herbert');
  await owner.goto(booksUrl);
  await owner.click('#records th a:has-text("title")');
  await owner.click('#records th a:has-text("title")');
  const titles = await owner.locator('#records tbody td[data-label=title]').allTextContents();
  check(titles.join(',') === 'Ulysses,Emma,Dune', `sorted by title descending (${titles})`);
  await shoot(owner, 'records');
  // Editing one record: a bad value is refused beside its field with the
  // input kept; a good one is saved.
  await owner.locator('#records tr', { hasText: 'Emma' }).locator('a:has-text("Edit")').click();
  await owner.waitForURL(/\/records\/\d+$/);
  const recordUrl = owner.url();
  check((await owner.inputValue('#f-field\\.title')) === 'Emma', 'the edit form holds the record');
  await owner.fill('#f-field\\.price', 'nine');
  await owner.click('button:has-text("Save changes")');
  check(await owner.locator('#f-field\\.price-error').isVisible(), 'a non-number price is refused beside the field');
  check((await owner.inputValue('#f-field\\.price')) === 'nine', 'the input is kept');
  await shoot(owner, 'record-edit-error');
  await owner.fill('#f-field\\.price', '9');
  await owner.click('button:has-text("Save changes")');
  await owner.waitForURL(/ok=record-saved/);
  check((await owner.inputValue('#f-field\\.price')) === '9', 'the price is saved');
  await shoot(owner, 'record-edit');
  // A member with the reader set: no price column, no new-record form, no deletes.
  await owner.goto(teamUrl);
  await owner.fill('#f-email', 'reader@acme.test');
  await owner.selectOption('#f-role', 'member');
  await owner.click('button:has-text("Invite")');
  const link = (await owner.textContent('#invite-link')).trim();
  const reader = await newPage();
  await reader.goto(`${base}${link}`);
  await reader.fill('#f-display_name', 'Rita Reader');
  await reader.fill('#f-password', 'a long reader passphrase 55');
  await reader.click('button[type=submit]');
  await reader.waitForURL(/ok=joined/);
  await reader.fill('#f-email', 'reader@acme.test');
  await reader.fill('#f-password', 'a long reader passphrase 55');
  await reader.click('button[type=submit]');
  await reader.waitForURL(`${base}/console/`);
  await owner.goto(libraryUrl);
  await owner.selectOption('#f-account-email', 'reader@acme.test');
  await owner.selectOption('#f-account-set', 'reader');
  await owner.click('button:has-text("Add app account")');
  await owner.waitForURL(/ok=account-added/);
  await reader.goto(booksUrl);
  check((await reader.textContent('#privilege-set')).trim() === 'reader', 'the reader set is in force');
  check((await reader.locator('#records tbody tr').count()) === 3, 'the reader sees the records');
  const headers = (await reader.locator('#records thead th').allTextContents()).map((h) => h.trim()).filter(Boolean);
  check(!headers.includes('price') && headers.includes('title'), `no price column (${headers})`);
  check((await reader.locator('#new-record').count()) === 0, 'no new-record form');
  await shoot(reader, 'records-reader');
  check((await reader.locator('#records button:has-text("Delete")').count()) === 0, 'no delete buttons');
  // The reader opens a record: its fields, no form.
  await reader.goto(recordUrl);
  check(await reader.locator('text=does not let you change it').isVisible(), 'the reader cannot edit');
  check((await reader.locator('form input[name^="field."]').count()) === 0, 'no edit fields');
  check((await reader.locator('[data-field=price]').count()) === 0, 'no price');
  await reader.goto(booksUrl);
  // A delete posted anyway (with a valid CSRF token) is refused by the privilege set.
  const readerCsrf = await reader.locator('form.signout input[name=csrf]').inputValue();
  await owner.goto(booksUrl);
  const deleteAction = await owner.locator('#records form').first().getAttribute('action');
  const forced = await reader.request.post(`${base}${deleteAction}`, { form: { csrf: readerCsrf }, maxRedirects: 0, ignoreHTTPSErrors: true });
  check(forced.status() === 403, `a forced delete is refused (${forced.status()})`);
  await reader.goto(booksUrl);
  check((await reader.locator('#records tbody tr').count()) === 3, 'nothing was deleted');
  await reader.context().close();
  pages.delete(reader);
});

await scenario('a CSV file is imported with upload progress; a bad row imports nothing', async () => {
  await owner.goto(libraryUrl);
  await owner.click('a:has-text("Import CSV into a table")');
  await owner.waitForURL(/\/import$/);
  await owner.selectOption('#f-table', 'books');
  // Notes whether the progress row was shown (only the script shows it,
  // and only when it sends the form itself: a plain post would reload).
  await owner.evaluate(() => {
    window.progressShown = false;
    const row = document.getElementById('import-progress');
    new MutationObserver(() => { if (!row.hidden) window.progressShown = true; }).observe(row, { attributes: true });
  });
  await owner.setInputFiles('#f-file', { name: 'books.csv', mimeType: 'text/csv', buffer: Buffer.from('title,author,price\nMiddlemarch,Eliot,11\nBad,Nobody,cheap\n') });
  await owner.click('button:has-text("Import")');
  await owner.locator('#f-file-error').waitFor();
  check((await owner.textContent('#f-file-error')).includes('Nothing was imported'), 'the bad row is named and nothing imported');
  check(await owner.evaluate(() => window.progressShown === true), 'the upload showed its progress');
  check((await owner.inputValue('#f-table')) === 'books', 'the table is kept');
  await shoot(owner, 'import-error');
  await owner.setInputFiles('#f-file', { name: 'books.csv', mimeType: 'text/csv', buffer: Buffer.from('title,author,price\nMiddlemarch,Eliot,11\nBeloved,Morrison,10\n') });
  await owner.click('button:has-text("Import")');
  await owner.waitForURL(/ok=imported/);
  check((await owner.textContent('#import-done')).includes('Imported 2 row(s)'), 'two rows imported');
  await shoot(owner, 'import');
  await owner.goto(libraryUrl);
  await owner.click('#layouts a:has-text("Browse records") >> nth=0');
  check((await owner.locator('#records tbody tr').count()) === 5, 'five books now');
});

await scenario('a form posted without the CSRF token is refused and changes nothing', async () => {
  const teamPath = new URL(teamUrl).pathname;
  const noToken = await owner.request.post(`${base}${teamPath}/hosts`, { form: { name: 'forged' }, maxRedirects: 0, ignoreHTTPSErrors: true });
  check(noToken.status() === 403, `no token: 403 (got ${noToken.status()})`);
  const wrongToken = await owner.request.post(`${base}${teamPath}/hosts`, { form: { name: 'forged', csrf: 'f'.repeat(64) }, maxRedirects: 0, ignoreHTTPSErrors: true });
  check(wrongToken.status() === 403, `wrong token: 403 (got ${wrongToken.status()})`);
  const csp = noToken.headers()['content-security-policy'] || '';
  check(csp.includes("script-src 'self'") && !csp.includes('unsafe-inline'), `the strict CSP holds (${csp})`);
  await owner.goto(teamUrl);
  check((await owner.locator('#hosts h3:has-text("forged")').count()) === 0, 'no forged host exists');
});

await scenario('the owner switches the team MFA requirement and reads the team events', async () => {
  await owner.goto(teamUrl);
  await owner.click('a:has-text("Security settings and events")');
  check(await owner.locator('input[name=policy][value=none]').isChecked(), 'no requirement at first');
  check(await owner.locator('#team-events code:has-text("host.created")').first().isVisible(), 'the team events list host.created');
  await shoot(owner, 'team-security');
  await owner.check('input[name=policy][value=all]');
  await owner.click('button:has-text("Save requirement")');
  await owner.waitForURL(/ok=mfa-policy-saved/);
  // The owner has no second factor yet: the team's pages now ask for one.
  check(await owner.locator('h1:has-text("A second factor is required")').isVisible(), 'the requirement applies at once');
  await owner.click('a:has-text("Set up a second factor")');
  await owner.click('button:has-text("Show my setup key")');
  const secret = (await owner.textContent('#totp-secret')).trim();
  ownerTotp = new OTPAuth.TOTP({ secret: OTPAuth.Secret.fromBase32(secret), digits: 6, period: 30, algorithm: 'SHA1' });
  await owner.fill('#f-code', await freshCode(ownerTotp));
  await owner.click('button[type=submit]');
  check((await owner.locator('#recovery-codes code').count()) === 10, 'the owner gets recovery codes');
  await owner.goto(teamUrl);
  await owner.click('a:has-text("Security settings and events")');
  check(await owner.locator('input[name=policy][value=all]').isChecked(), 'the requirement is saved');
  check(await owner.locator('#team-events code:has-text("team.mfa_policy.changed")').first().isVisible(), 'the change is in the team events');
});

await scenario('deleting a host or an app needs its name and a fresh code from the authenticator', async () => {
  await owner.goto(teamUrl);
  const spare = owner.locator('article.host', { hasText: 'spare-two' });
  await spare.locator('summary').click();
  check(await spare.locator('button:has-text("Delete host")').isDisabled(), 'delete waits for the name');
  await spare.locator('input[name^="confirm-"]').fill('spare-two');
  await spare.locator('input[name^="code-"]').fill('000000');
  await spare.locator('button:has-text("Delete host")').click();
  const refused = owner.locator('article.host', { hasText: 'spare-two' });
  check(await refused.locator('input[name^="code-"][aria-invalid=true]').isVisible(), 'a wrong code is refused beside the field');
  check((await refused.locator('input[name^="confirm-"]').inputValue()) === 'spare-two', 'the typed name is kept');
  await shoot(owner, 'host-delete-error');
  await refused.locator('input[name^="code-"]').fill(await freshCode(ownerTotp));
  await refused.locator('button:has-text("Delete host")').click();
  await owner.waitForURL(/ok=host-deleted/);
  check((await owner.locator('#hosts h3:has-text("spare-two")').count()) === 0, 'the host is gone');
  // The app: a wrong name is refused even when posted directly.
  await owner.goto(addressBookUrl);
  check(await owner.locator('button:has-text("Delete app")').isDisabled(), 'delete is disabled until the name is typed');
  const path = new URL(addressBookUrl).pathname;
  const csrf = await owner.locator('#delete input[name=csrf]').inputValue();
  const wrong = await owner.request.post(`${base}${path}/delete`, { form: { csrf, confirm: 'Address', code: '000000' }, maxRedirects: 0, ignoreHTTPSErrors: true });
  check(wrong.status() === 422, `a wrong name is refused (${wrong.status()})`);
  await owner.fill('#f-confirm', 'Address Book');
  await owner.click('button:has-text("Delete app")');
  check(await owner.locator('#f-code-error').isVisible(), 'a missing code is refused beside the field');
  await owner.fill('#f-code', await freshCode(ownerTotp));
  await owner.click('button:has-text("Delete app")');
  await owner.waitForURL(/ok=app-deleted/);
  check((await owner.locator('a.app-name:has-text("Address Book")').count()) === 0, 'the app is gone');
});

await scenario('the owner makes a group, adds a member and gives the group a role', async () => {
  await owner.goto(teamUrl);
  await owner.click('a:has-text("Groups and roles")');
  check(await owner.locator('#no-groups').isVisible(), 'the empty state explains groups');
  await owner.click('button:has-text("Create group")');
  check(await owner.locator('#f-name-error').isVisible(), 'an empty name is refused beside the field');
  await owner.fill('#f-name', 'Librarians');
  await owner.click('button:has-text("Create group")');
  await owner.waitForURL(/ok=group-created/);
  const group = owner.locator('section.group', { hasText: 'Librarians' });
  await group.locator('select[name=account]').selectOption({ label: 'Rita Reader <reader@acme.test>' });
  await group.locator('button:has-text("Add to Librarians")').click();
  await owner.waitForURL(/ok=group-member-added/);
  await owner.locator('section.group', { hasText: 'Librarians' }).locator('select[name=role]').selectOption('auditor');
  await owner.locator('section.group', { hasText: 'Librarians' }).locator('button:has-text("Grant role")').click();
  await owner.waitForURL(/ok=group-role-granted/);
  const done = owner.locator('section.group', { hasText: 'Librarians' });
  check(await done.locator('text=reader@acme.test').isVisible(), 'the member is listed');
  check(await done.locator('.roles .badge:has-text("auditor")').isVisible(), 'the role is listed');
  await shoot(owner, 'team-groups');
});

await scenario('a flow is created from a document, refused text is kept, a manual run fails at a step and is re-run', async () => {
  await owner.goto(teamUrl);
  await owner.click('a:has-text("Flows")');
  check(await owner.locator('#no-flows').isVisible(), 'the empty state explains flows');
  await shoot(owner, 'flows-empty');
  await owner.fill('#f-document', '{"name": "Greeter", "trigger": {"kind": "manual"}, "steps": [{"id": "greet", "kind": "transform", "set": {"x": "input.name +"}}]}');
  await owner.click('button:has-text("Create flow")');
  check(await owner.locator('#f-document-error:has-text("steps[0].set.x")').isVisible(), 'the problem is shown with its path beside the field');
  check((await owner.inputValue('#f-document')).includes('input.name +'), 'the text is kept');
  await owner.fill('#f-document', '{"name": "Greeter", "trigger": {"kind": "manual"}, "steps": [{"id": "greet", "kind": "transform", "set": {"greeting": "\'hello \' ~ input.name"}}, {"id": "check", "kind": "fail", "message": "no mailbox for {{ input.name }}"}]}');
  await owner.click('button:has-text("Create flow")');
  check(await owner.locator('h1:has-text("Greeter")').isVisible(), 'the flow page opens');
  check(await owner.locator('#flow-state:has-text("disabled")').isVisible(), 'a new flow starts disabled');
  await owner.click('button:has-text("Enable flow")');
  await owner.waitForURL(/ok=flow-enabled/);
  await owner.fill('#f-input', '{"name": "Ada"}');
  await owner.click('button:has-text("Start run")');
  await owner.waitForURL(/\/runs\/[0-9a-f-]+\?ok=run-started/);
  // The failed step is stored before the run is marked failed (each step
  // commits on its own), so wait for the run's end, not the step's record.
  for (let i = 0; i < 50 && !(await owner.locator('button:has-text("Re-run from the failed step")').count()); i += 1) {
    await owner.waitForTimeout(100);
    await owner.reload();
  }
  check(await owner.locator('li.step[data-step=greet][data-status=succeeded]').isVisible(), 'the first step succeeded');
  check(await owner.locator('li.step[data-step=check][data-status=failed]').isVisible(), 'the second step failed');
  check(await owner.locator('text=no mailbox for Ada').first().isVisible(), 'its error is shown');
  await shoot(owner, 'flow-run');
  await owner.click('button:has-text("Re-run from the failed step")');
  await owner.waitForURL(/ok=run-started/);
  await owner.click('nav.crumbs a:has-text("Runs")');
  check((await owner.locator('#runs tbody tr').count()) === 2, 'both runs are listed');
  await owner.selectOption('#f-status', 'succeeded');
  await owner.click('button:has-text("Filter")');
  check(await owner.locator('#no-runs').isVisible(), 'no run succeeded');
  await owner.click('nav.crumbs a:has-text("Greeter")');
  check(await owner.locator('#m-runs').isVisible(), 'the flow page shows its metrics');
  await shoot(owner, 'flow');
});

await scenario('sign-out, then sign-in with password and TOTP', async () => {
  await op.click('button:has-text("Sign out")');
  await op.waitForURL(/\/console\/sign-in/);
  await op.goto(`${base}/console/account`);
  check(op.url().includes('/console/sign-in'), 'signed out: pages ask to sign in');
  // A wrong password says so without telling whether the account exists.
  await op.fill('#f-email', 'nobody@kura.test');
  await op.fill('#f-password', 'wrong password entirely');
  await op.click('button[type=submit]');
  const unknown = (await op.textContent('[role=alert]')).trim();
  await op.fill('#f-email', OPERATOR.email);
  await op.fill('#f-password', 'wrong password entirely');
  await op.click('button[type=submit]');
  const wrong = (await op.textContent('[role=alert]')).trim();
  check(unknown === wrong, `the same message for an unknown account and a wrong password (${unknown} / ${wrong})`);
  check((await op.inputValue('#f-email')) === OPERATOR.email, 'the email is kept');
  await shoot(op, 'sign-in-error');
  await op.fill('#f-password', OPERATOR.password);
  await op.click('button[type=submit]');
  await op.waitForURL(/\/console\/mfa/);
  await shoot(op, 'mfa');
  await op.fill('#f-code', '123456');
  await op.click('button[type=submit]');
  check(await op.locator('#f-code-error').isVisible(), 'a wrong code is refused');
  await op.fill('#f-code', await freshCode());
  await op.click('button[type=submit]');
  await op.waitForURL(`${base}/console/account`);
  check(await op.locator('h1:has-text("Account")').isVisible(), 'back on the account page after signing in');
});

await scenario('an ended session returns to sign-in and then to the page, with a recovery code', async () => {
  await op.goto(`${base}/console/account`);
  await shoot(op, 'account');
  await op.context().clearCookies();
  await op.goto(`${base}/console/account`);
  check(op.url().includes('/console/sign-in?next='), `redirected to sign-in with next (${op.url()})`);
  await op.fill('#f-email', OPERATOR.email);
  await op.fill('#f-password', OPERATOR.password);
  await op.click('button[type=submit]');
  await op.waitForURL(/\/console\/mfa/);
  await op.click('text=Use a recovery code');
  await op.fill('#f-code', recoveryCodes[0]);
  await op.click('button[type=submit]');
  await op.waitForURL(`${base}/console/account`);
  check(await op.locator('h1:has-text("Account")').isVisible(), 'back where the operator was');
});

await scenario('a second session is listed and can be revoked', async () => {
  const other = await newPage();
  await other.goto(`${base}/console/sign-in`);
  await other.fill('#f-email', OPERATOR.email);
  await other.fill('#f-password', OPERATOR.password);
  await other.click('button[type=submit]');
  await other.waitForURL(/\/console\/mfa/);
  await other.fill('#f-code', await freshCode());
  await other.click('button[type=submit]');
  await other.waitForURL(`${base}/console/`);
  await op.goto(`${base}/console/account`);
  const before = await op.locator('tbody tr').count();
  check(before >= 2, `both sessions are listed (${before})`);
  // End every other session, one form post each.
  for (let i = 1; i < before; i += 1) {
    await op.click('button:has-text("Sign out this session") >> nth=0');
    await op.waitForURL(/ok=session-revoked/);
  }
  check((await op.locator('tbody tr').count()) === 1, 'only this session is left');
  await other.goto(`${base}/console/`);
  check(other.url().includes('/console/sign-in'), 'the revoked session must sign in again');
  await other.context().close();
  pages.delete(other);
});

await scenario('an operator sees every team and the platform health', async () => {
  await op.goto(`${base}/console/`);
  await op.click('nav >> text=Platform');
  await op.waitForURL(`${base}/console/operator/platform`);
  check((await op.textContent('#team-count')).trim() === '1', 'one team');
  check(await op.locator('#teams a:has-text("Acme")').isVisible(), 'the team is listed');
  check(await op.locator('#health-storage .badge:has-text("answers")').isVisible(), 'storage answers');
  await shoot(op, 'platform');
});

await scenario('an operator opens an incident, triages it and searches security events', async () => {
  await op.goto(`${base}/console/`);
  await op.click('nav >> text=Incidents');
  check(await op.locator('text=Nothing here.').first().isVisible(), 'the empty board says so');
  await op.click('button:has-text("Open incident")');
  check(await op.locator('#f-title-error').isVisible(), 'an empty title is refused beside the field');
  await op.fill('#f-title', 'Suspicious sign-ins from one address');
  await op.selectOption('#f-severity', 'sev2');
  await op.fill('#f-note', 'Seen in the sign-in failures.');
  await op.click('button:has-text("Open incident")');
  await op.waitForURL(/\/console\/operator\/incidents\/[0-9a-f-]+$/);
  check((await op.textContent('#incident-state')).trim() === 'open', 'the incident is open');
  await op.selectOption('#f-to', 'triaged');
  await op.fill('#f-tnote', 'Confirmed: one address, many accounts.');
  await op.click('button:has-text("Change state")');
  check((await op.textContent('#incident-state')).trim() === 'triaged', 'the incident is triaged');
  check(await op.locator('#timeline').getByText('Confirmed: one address, many accounts.').isVisible(), 'the note is on the timeline');
  await shoot(op, 'incident');
  await op.click('a:has-text("Incidents") >> nth=1');
  check(await op.locator('section[aria-label=triaged] .incident-card').count() === 1, 'the board shows it as triaged');
  await shoot(op, 'incidents');
  await op.click('nav >> text=Security events');
  await op.fill('#f-action', 'auth.');
  await op.selectOption('#f-outcome', 'failure');
  await op.click('button:has-text("Search")');
  const rows = await op.locator('#events tbody tr').count();
  check(rows > 0, `failed sign-ins are found (${rows})`);
  const actions = await op.locator('#events tbody td[data-label=Action]').allTextContents();
  check(actions.every((a) => a.trim().startsWith('auth.')), `only auth. actions (${actions.slice(0, 3)})`);
  await shoot(op, 'events');
});

await scenario('an operator sees the key status and rotates the master key with a fresh code', async () => {
  await op.goto(`${base}/console/`);
  await op.click('nav >> text=Keys');
  await op.waitForURL(`${base}/console/operator/keys`);
  const row = (v) => op.locator(`#key-versions tr[data-version="${v}"]`);
  check(await row(1).count() === 1 && await row(2).count() === 0, 'one master key version before the rotation');
  check((await row(1).locator('td[data-label=State]').textContent()).trim() === 'current', 'version 1 is current');
  const before = Number((await row(1).locator('td[data-label="Data keys"]').textContent()).trim());
  check(before >= 1, `the platform key at least is counted (${before})`);
  // Without a code, and with a wrong one, nothing is rotated.
  await op.click('button:has-text("Rotate master key")');
  check(await op.locator('#f-code-error').isVisible(), 'a missing code is refused beside the field');
  await op.fill('#f-code', '000000');
  await op.click('button:has-text("Rotate master key")');
  check(await op.locator('#f-code-error').isVisible(), 'a wrong code is refused beside the field');
  check(await row(2).count() === 0, 'a wrong code rotates nothing');
  await shoot(op, 'keys-error');
  await op.fill('#f-code', await freshCode());
  await op.click('button:has-text("Rotate master key")');
  await op.waitForURL(/\/console\/operator\/keys\?ok=rotated$/);
  check((await row(2).locator('td[data-label=State]').textContent()).trim() === 'current', 'version 2 is current');
  check((await row(1).locator('td[data-label=State]').textContent()).trim() === 'previous', 'version 1 is previous');
  check(Number((await row(2).locator('td[data-label="Data keys"]').textContent()).trim()) === before, 'every data key moved to version 2');
  check(Number((await row(1).locator('td[data-label="Data keys"]').textContent()).trim()) === 0, 'none is left under version 1');
  await shoot(op, 'keys');
  await op.click('nav >> text=Security events');
  await op.fill('#f-action', 'keys.master.rotated');
  await op.click('button:has-text("Search")');
  check(await op.locator('#events tbody tr').count() === 1, 'the rotation is in the security log');
});

await scenario('an operator replaces the platform firewall lists; bad entries and a wrong code change nothing', async () => {
  await op.click('nav >> text=Firewall');
  await op.waitForURL(`${base}/console/operator/firewall`);
  check(await op.locator('text=Never changed').isVisible(), 'the firewall starts unchanged');
  await op.fill('#f-deny', '203.0.113.0/24\nnot-a-range');
  await op.click('button:has-text("Save firewall")');
  check(await op.locator('#f-deny-error').isVisible(), 'an invalid range is refused beside the deny list');
  check((await op.textContent('#f-deny-error')).includes('not-a-range'), 'the error names the entry');
  check((await op.inputValue('#f-deny')).includes('not-a-range'), 'the input is kept');
  check(await op.locator('text=Never changed').isVisible(), 'nothing changed');
  await shoot(op, 'firewall-error');
  await op.fill('#f-deny', '203.0.113.0/24\n198.51.100.7');
  await op.fill('#f-code', '000000');
  await op.click('button:has-text("Save firewall")');
  check(await op.locator('#f-code-error').isVisible(), 'a wrong code is refused beside the field');
  check(await op.locator('text=Never changed').isVisible(), 'a wrong code changes nothing');
  await op.fill('#f-code', await freshCode());
  await op.click('button:has-text("Save firewall")');
  await op.waitForURL(/\/console\/operator\/firewall\?ok=saved$/);
  check((await op.textContent('#firewall-version')).trim() === '1', 'the lists are at version 1');
  const deny = (await op.inputValue('#f-deny')).split('\n');
  check(deny.includes('203.0.113.0/24') && deny.includes('198.51.100.7/32'), `the deny list is stored (${deny})`);
  await shoot(op, 'firewall');
});

await scenario('passkey registration and sign-in through the virtual authenticator', async () => {
  const cdp = await op.context().newCDPSession(op);
  await cdp.send('WebAuthn.enable');
  const { authenticatorId } = await cdp.send('WebAuthn.addVirtualAuthenticator', {
    options: { protocol: 'ctap2', transport: 'internal', hasResidentKey: true, hasUserVerification: true, isUserVerified: true, automaticPresenceSimulation: true },
  });
  await op.goto(`${base}/console/account`);
  check(await op.locator('text=No passkeys yet').isVisible(), 'no passkeys at first');
  await op.fill('#f-passkey-name', 'Virtual key');
  await op.click('#passkey-register');
  await op.waitForURL(/ok=passkey-added/);
  check(await op.locator('#passkeys strong:has-text("Virtual key")').isVisible(), 'the passkey is listed');
  const { credentials } = await cdp.send('WebAuthn.getCredentials', { authenticatorId });
  check(credentials.length === 1, `the authenticator holds one credential (${credentials.length})`);
  await shoot(op, 'account-passkey');
  await op.click('button:has-text("Sign out")');
  await op.waitForURL(/\/console\/sign-in/);
  await op.goto(`${base}/console/sign-in?next=%2Fconsole%2Faccount`);
  await op.click('#passkey-sign-in');
  await op.waitForURL(`${base}/console/account`);
  check(await op.locator('h1:has-text("Account")').isVisible(), 'signed in with the passkey alone');
});

await scenario('a personal API token is shown once, works, and stops when revoked', async () => {
  await op.click('nav >> text=API tokens');
  check(await op.locator('text=No tokens yet.').isVisible(), 'the empty state says so');
  await op.fill('#f-name', 'deploy script');
  await op.click('button:has-text("Create token")');
  check(await op.locator('#scopes-error').isVisible(), 'no scope: refused beside the scopes');
  check((await op.inputValue('#f-name')) === 'deploy script', 'the name is kept');
  check(await op.locator('text=No tokens yet.').isVisible(), 'nothing was created');
  await op.check('input[name=scope][value="account:read"]');
  await op.click('button:has-text("Create token")');
  const token = (await op.textContent('#new-token')).trim();
  check(token.startsWith('kura_pat_'), `a personal token is shown (${token.slice(0, 12)}…)`);
  await shoot(op, 'tokens');
  const me = await op.request.get(`${base}/api/v1/me`, { headers: { Authorization: `Bearer ${token}` }, ignoreHTTPSErrors: true });
  check(me.status() === 200, `the token works (${me.status()})`);
  await op.goto(`${base}/console/tokens`);
  check((await op.locator('#new-token').count()) === 0, 'the token is not shown again');
  await op.click('button:has-text("Revoke")');
  await op.waitForURL(/ok=token-revoked/);
  const after = await op.request.get(`${base}/api/v1/me`, { headers: { Authorization: `Bearer ${token}` }, ignoreHTTPSErrors: true });
  check(after.status() === 401, `the revoked token is refused (${after.status()})`);
});

await scenario('remember this device: the next sign-in skips the code', async () => {
  const dev = await newPage();
  const signIn = async () => {
    await dev.goto(`${base}/console/sign-in`);
    await dev.fill('#f-email', OPERATOR.email);
    await dev.fill('#f-password', OPERATOR.password);
    await dev.click('button[type=submit]');
  };
  await signIn();
  await dev.waitForURL(/\/console\/mfa/);
  check(!(await dev.isChecked('#f-remember')), 'remembering is off by default');
  await dev.check('#f-remember');
  await dev.fill('#f-code', await freshCode());
  await dev.click('button[type=submit]');
  await dev.waitForURL(`${base}/console/`);
  const cookies = await dev.context().cookies();
  const device = cookies.find((c) => c.name === '__Host-kura_device');
  check(device && device.httpOnly && device.secure && device.sameSite === 'Strict', 'an HttpOnly, Secure, SameSite=Strict device cookie');
  await dev.click('button:has-text("Sign out")');
  await dev.waitForURL(/\/console\/sign-in/);
  await signIn();
  await dev.waitForURL(`${base}/console/`);
  check(await dev.locator('h1:has-text("Teams")').isVisible(), 'signed in without a code');
  await dev.context().close();
  pages.delete(dev);
});

await browser.close();
if (failures > 0) {
  console.log(`${failures} scenario(s) failed`);
  process.exit(1);
}
