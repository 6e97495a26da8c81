// Kura Console: small progressive enhancements. Every page works without it.
'use strict';

document.addEventListener('DOMContentLoaded', () => {
  // An invitation link carries its token in the fragment (never sent to the
  // server in the URL); copy it into the acceptance form.
  const token = document.getElementById('f-token');
  if (token && !token.value && location.hash.length > 1) {
    token.value = decodeURIComponent(location.hash.slice(1));
    const wrap = token.closest('.field');
    if (wrap) wrap.classList.add('prefilled');
  }
  // Destructive forms: the button stays disabled until the name is typed.
  for (const form of document.querySelectorAll('form[data-confirm-name]')) {
    const input = form.querySelector('input[name^="confirm"]');
    const button = form.querySelector('button[type="submit"]');
    if (!input || !button) continue;
    const check = () => { button.disabled = input.value !== form.dataset.confirmName; };
    input.addEventListener('input', check);
    check();
  }
  // Put the keyboard focus on the first field with an error.
  const invalid = document.querySelector('[aria-invalid="true"]');
  if (invalid) invalid.focus();
});

// Passkeys (WebAuthn): registration on the account page and sign-in on the
// sign-in page, through the admin API's ceremony endpoints on this origin.
// Buttons stay hidden where the browser has no WebAuthn.
const b64u = {
  decode(s) {
    const bin = atob(s.replace(/-/g, '+').replace(/_/g, '/') + '==='.slice((s.length + 3) % 4));
    return Uint8Array.from(bin, (c) => c.charCodeAt(0)).buffer;
  },
  encode(buf) {
    let bin = '';
    for (const b of new Uint8Array(buf)) bin += String.fromCharCode(b);
    return btoa(bin).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
  },
};

async function api(path, body, csrf) {
  const headers = { 'Content-Type': 'application/json', Accept: 'application/json' };
  if (csrf) headers['X-CSRF-Token'] = csrf;
  const r = await fetch(path, { method: 'POST', credentials: 'same-origin', headers, body: JSON.stringify(body) });
  const data = await r.json().catch(() => ({}));
  if (!r.ok) throw new Error(data.detail || data.title || `request failed (${r.status})`);
  return data;
}

function showError(id, e) {
  const el = document.getElementById(id);
  if (!el) return;
  el.textContent = e.name === 'NotAllowedError'
    ? 'The passkey request was cancelled or timed out. Try again.'
    : `The passkey did not work: ${e.message}`;
  el.hidden = false;
}

async function registerPasskey(button) {
  const csrf = button.dataset.csrf;
  const nameInput = document.getElementById('f-passkey-name');
  const c = await api('/api/v1/me/mfa/passkeys/challenge', {}, csrf);
  const pk = c.options.publicKey;
  pk.challenge = b64u.decode(pk.challenge);
  pk.user.id = b64u.decode(pk.user.id);
  for (const cred of pk.excludeCredentials || []) cred.id = b64u.decode(cred.id);
  // The sign-in page offers passkeys without an email address, which needs
  // a discoverable credential: ask the authenticator to keep one.
  pk.authenticatorSelection = { ...(pk.authenticatorSelection || {}), residentKey: 'preferred' };
  const cred = await navigator.credentials.create({ publicKey: pk });
  const credential = {
    id: cred.id,
    rawId: b64u.encode(cred.rawId),
    type: cred.type,
    extensions: {},
    response: {
      attestationObject: b64u.encode(cred.response.attestationObject),
      clientDataJSON: b64u.encode(cred.response.clientDataJSON),
    },
  };
  const name = (nameInput && nameInput.value.trim()) || 'Passkey';
  await api('/api/v1/me/mfa/passkeys', { ceremony_id: c.ceremony_id, name, credential }, csrf);
  location.assign('/console/account?ok=passkey-added');
}

async function signInWithPasskey(button) {
  const c = await api('/api/v1/sessions/passkey/challenge', {});
  const pk = c.options.publicKey;
  pk.challenge = b64u.decode(pk.challenge);
  for (const cred of pk.allowCredentials || []) cred.id = b64u.decode(cred.id);
  const a = await navigator.credentials.get({ publicKey: pk });
  const credential = {
    id: a.id,
    rawId: b64u.encode(a.rawId),
    type: a.type,
    extensions: {},
    response: {
      authenticatorData: b64u.encode(a.response.authenticatorData),
      clientDataJSON: b64u.encode(a.response.clientDataJSON),
      signature: b64u.encode(a.response.signature),
      userHandle: a.response.userHandle ? b64u.encode(a.response.userHandle) : null,
    },
  };
  const s = await api('/api/v1/sessions/passkey', { ceremony_id: c.ceremony_id, credential, cookie: true });
  const next = button.dataset.next || '/console/';
  location.assign(s.next === 'done' ? next : `/console/mfa?next=${encodeURIComponent(next)}`);
}

document.addEventListener('DOMContentLoaded', () => {
  if (!window.PublicKeyCredential) return;
  for (const [id, run, errorId] of [
    ['passkey-register', registerPasskey, 'passkey-error'],
    ['passkey-sign-in', signInWithPasskey, 'passkey-error'],
  ]) {
    const button = document.getElementById(id);
    if (!button) continue;
    button.hidden = false;
    button.addEventListener('click', () => {
      button.disabled = true;
      run(button).catch((e) => { showError(errorId, e); button.disabled = false; });
    });
  }
  for (const el of document.querySelectorAll('.needs-webauthn')) el.hidden = false;
  for (const el of document.querySelectorAll('.no-webauthn')) el.hidden = true;
});

// Uploads (CSV import): send the form with upload progress, then show the
// page the server answers with: its address after a redirect, or its main
// content when the form comes back with errors. Without JavaScript the form
// posts as usual.
document.addEventListener('DOMContentLoaded', () => {
  for (const form of document.querySelectorAll('form[data-progress]')) {
    const row = document.getElementById(form.dataset.progress);
    if (!row || !window.XMLHttpRequest || !window.FormData) continue;
    const bar = row.querySelector('progress');
    const text = row.querySelector('.progress-text');
    form.addEventListener('submit', (ev) => {
      ev.preventDefault();
      const button = form.querySelector('button[type="submit"]');
      if (button) button.disabled = true;
      row.hidden = false;
      const xhr = new XMLHttpRequest();
      xhr.open('POST', form.action);
      xhr.upload.addEventListener('progress', (e) => {
        if (!e.lengthComputable) return;
        const pct = Math.round((e.loaded / e.total) * 100);
        bar.value = pct;
        bar.textContent = `${pct}%`;
        text.textContent = pct < 100 ? `Uploading… ${pct}%` : 'Checking and importing…';
      });
      xhr.addEventListener('load', () => {
        if (xhr.status >= 200 && xhr.status < 300 && xhr.responseURL && xhr.responseURL !== form.action) {
          location.assign(xhr.responseURL);
          return;
        }
        const doc = new DOMParser().parseFromString(xhr.responseText, 'text/html');
        const main = doc.querySelector('main');
        if (main) {
          document.querySelector('main').replaceWith(document.adoptNode(main));
          const invalid = document.querySelector('[aria-invalid="true"]');
          if (invalid) invalid.focus();
          // The new form gets the same behaviour.
          document.dispatchEvent(new Event('DOMContentLoaded'));
        } else {
          text.textContent = `The import failed (${xhr.status}). Reload the page and try again.`;
          if (button) button.disabled = false;
        }
      });
      xhr.addEventListener('error', () => {
        text.textContent = 'The upload broke off. Check the connection and try again.';
        if (button) button.disabled = false;
      });
      xhr.send(new FormData(form));
    });
  }
});
