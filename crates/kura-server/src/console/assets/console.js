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
    const input = form.querySelector('input[name="confirm"]');
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
