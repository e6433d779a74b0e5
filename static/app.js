// The console works without this file; it only adds copy buttons and
// confirmation prompts. Served by tessera itself (no inline script: the
// Content-Security-Policy forbids it).
document.addEventListener("click", (event) => {
  const copy = event.target.closest("[data-copy]");
  if (copy) {
    const source = document.getElementById(copy.dataset.copy);
    if (source && navigator.clipboard) {
      navigator.clipboard.writeText(source.textContent.trim()).then(() => {
        copy.textContent = "Copied";
      });
    }
    event.preventDefault();
  }
});
document.addEventListener("submit", (event) => {
  const question = event.target.dataset.confirm;
  if (question && !window.confirm(question)) {
    event.preventDefault();
  }
});

// Passkeys (WebAuthn): the buttons marked data-passkey. The pages show
// them only where the browser has passkeys (the boxes start hidden, so a
// page without scripts offers nothing it cannot do). The browser's API
// speaks ArrayBuffers, tessera's JSON base64url.
const b64url = {
  decode(text) {
    const s = text.replace(/-/g, "+").replace(/_/g, "/");
    const binary = atob(s + "===".slice((s.length + 3) % 4));
    return Uint8Array.from(binary, (c) => c.charCodeAt(0)).buffer;
  },
  encode(buffer) {
    let binary = "";
    for (const b of new Uint8Array(buffer)) {
      binary += String.fromCharCode(b);
    }
    return btoa(binary).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  },
};

// Same-origin JSON with the form token (the session cookie alone is never
// enough for a change).
async function postJson(path, body) {
  const field = document.querySelector("input[name=csrf_token]");
  const response = await fetch(path, {
    method: "POST",
    credentials: "same-origin",
    headers: {
      "Content-Type": "application/json",
      "X-CSRF-Token": field ? field.value : "",
    },
    body: JSON.stringify(body || {}),
  });
  let data = {};
  try {
    data = await response.json();
  } catch (_) {
    // An answer without JSON: its status says enough.
  }
  if (!response.ok) {
    const error = new Error(data.error || `tessera answered ${response.status}`);
    error.status = response.status;
    throw error;
  }
  return data;
}

function withIds(list) {
  return list && list.map((c) => ({ ...c, id: b64url.decode(c.id) }));
}

function creationOptions(pk) {
  const options = {
    ...pk,
    challenge: b64url.decode(pk.challenge),
    user: { ...pk.user, id: b64url.decode(pk.user.id) },
  };
  if (pk.excludeCredentials) {
    options.excludeCredentials = withIds(pk.excludeCredentials);
  }
  return options;
}

function requestOptions(pk) {
  const options = { ...pk, challenge: b64url.decode(pk.challenge) };
  if (pk.allowCredentials) {
    options.allowCredentials = withIds(pk.allowCredentials);
  }
  return options;
}

function registration(credential) {
  const r = credential.response;
  return {
    id: credential.id,
    rawId: b64url.encode(credential.rawId),
    type: credential.type,
    response: {
      attestationObject: b64url.encode(r.attestationObject),
      clientDataJSON: b64url.encode(r.clientDataJSON),
    },
    extensions: credential.getClientExtensionResults(),
  };
}

function assertion(credential) {
  const r = credential.response;
  return {
    id: credential.id,
    rawId: b64url.encode(credential.rawId),
    type: credential.type,
    response: {
      authenticatorData: b64url.encode(r.authenticatorData),
      clientDataJSON: b64url.encode(r.clientDataJSON),
      signature: b64url.encode(r.signature),
      userHandle: r.userHandle ? b64url.encode(r.userHandle) : null,
    },
    extensions: credential.getClientExtensionResults(),
  };
}

// Where to go once signed in: a recovery code used since the last sign-in
// is shown on the factor page first.
function afterSignIn(answer, to) {
  location.assign(answer.recovery_codes_used ? "/console/account/factors?ok=recovery_used" : to);
}

// A first factor's recovery codes, shown this once in place of the
// registration box (the server keeps only their digests).
function showRecoveryCodes(box, codes) {
  const said = document.createElement("p");
  said.className = "notice";
  said.setAttribute("role", "status");
  said.textContent =
    "Passkey registered. Keep these recovery codes somewhere safe: each signs you in once if you lose your passkey. They are shown only now.";
  const list = document.createElement("ul");
  list.className = "codes";
  list.id = "recovery-codes";
  for (const code of codes) {
    const item = document.createElement("li");
    const text = document.createElement("code");
    text.textContent = code;
    item.append(text);
    list.append(item);
  }
  const done = document.createElement("a");
  done.href = "/console/account/factors?ok=passkey_added";
  done.textContent = "I have saved them";
  done.id = "recovery-codes-saved";
  box.replaceChildren(said, list, done);
}

const passkeyActions = {
  async register(button, box) {
    const name = box.querySelector("[name=passkey_name]");
    const start = await postJson("/auth/factors/passkey/start");
    const credential = await navigator.credentials.create({
      publicKey: creationOptions(start.publicKey),
    });
    const answer = await postJson("/auth/factors/passkey/finish", {
      ceremony: start.ceremony,
      name: name ? name.value : "",
      credential: registration(credential),
    });
    if (answer.recovery_codes) {
      showRecoveryCodes(box, answer.recovery_codes);
    } else {
      location.assign("/console/account/factors?ok=passkey_added");
    }
  },
  async "sign-in"() {
    const start = await postJson("/auth/passkey/start");
    const credential = await navigator.credentials.get({
      publicKey: requestOptions(start.publicKey),
    });
    const stay = document.querySelector("input[name=auto_login]");
    const answer = await postJson("/auth/passkey/finish", {
      ceremony: start.ceremony,
      credential: assertion(credential),
      auto_login: Boolean(stay && stay.checked),
    });
    // `next` was checked by the server when it rendered the page.
    const next = document.querySelector("input[name=next]");
    afterSignIn(answer, (next && next.value) || "/");
  },
  async verify(button) {
    const start = await postJson("/auth/second-factor/passkey/start");
    const credential = await navigator.credentials.get({
      publicKey: requestOptions(start.publicKey),
    });
    const answer = await postJson("/auth/second-factor", {
      ceremony: start.ceremony,
      credential: assertion(credential),
    });
    afterSignIn(answer, button.dataset.done || "/");
  },
};

function passkeyProblem(error) {
  if (error && error.name === "NotAllowedError") {
    return "The passkey prompt was closed or timed out. Try again.";
  }
  if (error && error.name === "InvalidStateError") {
    return "This passkey is already registered here.";
  }
  if (error && error.status === 401) {
    return "That passkey was not accepted: it is not registered here, or was removed.";
  }
  return (error && error.message) || "The passkey did not work.";
}

if (window.PublicKeyCredential && navigator.credentials) {
  for (const box of document.querySelectorAll("[data-passkey-box]")) {
    box.hidden = false;
  }
}

document.addEventListener("click", async (event) => {
  const button = event.target.closest("button[data-passkey]");
  const action = button && passkeyActions[button.dataset.passkey];
  if (!action) {
    return;
  }
  event.preventDefault();
  const box = button.closest("[data-passkey-box]") || document.body;
  const problem = box.querySelector("[data-passkey-error]");
  if (problem) {
    problem.hidden = true;
  }
  button.disabled = true;
  try {
    await action(button, box);
  } catch (error) {
    if (problem) {
      problem.textContent = passkeyProblem(error);
      problem.hidden = false;
    }
  } finally {
    button.disabled = false;
  }
});
