//! The story of issue 11, end to end in real browsers, with two people at
//! two browser profiles: alice sets tessera up, invites bob, bob signs in
//! with his code and finishes signing up, alice creates an agent, neither
//! can reach the other's private data, bob signs out. Once with JavaScript
//! on (bob on a phone-sized screen) and once with it off: the pages are
//! plain forms and redirects and must work without scripts.

use serde_json::json;

use super::{bounded, form, Browser, Profile, Rig, SCRIPT_PROBE};

const ALICE_PASSWORD: &str = "alice-password-1";
const BOB_PASSWORD: &str = "bob-password-1";
const MEMORY_CANARY: &str = "alice-memory-canary-5f3a";
const SECRET_CANARY: &str = "alice-secret-canary-9c21";

/// The agent page's forms that only someone at `edit` or above (here: the
/// owner) is given, by what they post to under the agent's path.
const OWNER_FORMS: [&str; 4] = ["/edit", "/shares", "/tokens", "/delete"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn story_with_javascript() {
    bounded(story("story_with_javascript", true)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn story_without_javascript() {
    bounded(story("story_without_javascript", false)).await;
}

/// Prove the profile runs scripts or not, as asked: a page on another
/// loopback origin whose only script rewrites its text.
async fn assert_scripts(browser: &Browser, probe: &str, on: bool) {
    browser.goto(probe).await;
    let expected = if on { "scripts on" } else { "scripts off" };
    browser.assert_text(expected).await;
}

async fn story(test: &str, javascript: bool) {
    let rig = Rig::new(test);
    let api = &rig.tessera;
    let (desktop, phone) = if javascript {
        (Profile::DESKTOP, Profile::PHONE)
    } else {
        (
            Profile::DESKTOP.without_javascript(),
            Profile::PHONE.without_javascript(),
        )
    };
    let alice = rig.browser("alice", desktop).await;
    let bob = rig.browser("bob", phone).await;
    let probe_site = super::OtherOrigin::start().await;
    let probe = probe_site.serve("/probe", SCRIPT_PROBE.to_owned());
    assert_scripts(&alice, &probe, javascript).await;
    assert_scripts(&bob, &probe, javascript).await;

    // First run: with nobody there yet, every way in leads to setting up.
    alice.goto("/").await;
    alice.assert_path("/auth/setup").await;
    alice.assert_text("Welcome to tessera").await;
    alice.shot("first-run").await;
    let setup = form("/auth/setup");
    alice.fill(&setup, "username", "alice").await;
    alice.fill(&setup, "full_name", "Alice Admin").await;
    alice.fill(&setup, "email", "alice@example.org").await;
    alice.fill(&setup, "password", ALICE_PASSWORD).await;
    alice.submit(&setup).await;
    alice.assert_path("/console").await;
    alice.assert_text("Agents").await;
    alice.assert_text("No agents yet.").await;
    assert_eq!(
        alice.text_of("nav a[href='/console/account']").await,
        "alice"
    );
    alice.assert_present("nav a[href='/console/admin']").await;
    alice.assert_present(&form("/console/agents")).await;
    alice.shot("console-first").await;
    let alice_token = alice.session().await;

    // After first run the first-run page is gone for good.
    bob.goto("/auth/setup").await;
    bob.assert_path("/auth/login").await;
    assert_fits(&bob, javascript).await;
    bob.shot("sign-in").await;

    // alice invites bob from the admin page; the code is shown once, on
    // the answer to her post, never in its address.
    alice.goto("/console/admin").await;
    let invite = form("/console/admin/users");
    alice.fill(&invite, "username", "bob").await;
    alice.submit(&invite).await;
    let code = alice.text_of("code#invite-code").await;
    assert_eq!(code.len(), 8, "an 8-digit invite code: {code:?}");
    assert!(code.bytes().all(|b| b.is_ascii_digit()), "{code:?}");
    alice
        .assert_present("button[data-copy='invite-code']")
        .await;
    assert!(
        !alice.path().await.contains(&code),
        "the code is in the URL"
    );
    alice.shot("admin-invite").await;
    alice.goto("/console/admin").await;
    alice.assert_no_text(&code).await;

    // A wrong password is said in words, on the sign-in page.
    let sign_in = form("/auth/login");
    bob.fill(&sign_in, "username", "bob").await;
    bob.fill(&sign_in, "password", "not-the-code").await;
    bob.submit(&sign_in).await;
    bob.assert_path("/auth/login?error=1").await;
    bob.assert_text("Wrong username or password.").await;
    bob.shot("sign-in-refused").await;

    // bob signs in with his code and lands on onboarding.
    bob.fill(&sign_in, "username", "bob").await;
    bob.fill(&sign_in, "password", &code).await;
    bob.submit(&sign_in).await;
    bob.assert_path("/auth/onboarding").await;
    bob.assert_text("Welcome, bob").await;
    assert_fits(&bob, javascript).await;
    bob.shot("onboarding").await;
    // Until he finishes, the console sends him back here.
    bob.goto("/console").await;
    bob.assert_path("/auth/onboarding").await;
    let onboarding = form("/auth/complete");
    bob.fill(&onboarding, "full_name", "Bob Builder").await;
    bob.fill(&onboarding, "email", "bob@example.org").await;
    bob.fill(&onboarding, "password", BOB_PASSWORD).await;
    bob.tick(&onboarding, "auto_login").await;
    bob.submit(&onboarding).await;
    bob.assert_path("/console").await;
    assert_eq!(bob.text_of("nav a[href='/console/account']").await, "bob");
    bob.assert_absent("nav a[href='/console/admin']").await;
    assert_fits(&bob, javascript).await;
    bob.shot("console-first").await;
    // The code is spent: it signs nobody in any more.
    let (status, _) = api.api(
        "POST",
        "/auth/login",
        None,
        Some(json!({"username": "bob", "password": code})),
    );
    assert_eq!(status, 401, "the invite code still works after onboarding");
    let me = api.api_ok("GET", "/auth/me", &bob.session().await, None);
    assert_eq!(me["user"]["full_name"], "Bob Builder");
    assert_eq!(me["user"]["pending"], false);

    // alice creates an agent on the console.
    alice.goto("/console").await;
    let create = form("/console/agents");
    alice.fill(&create, "name", "research-helper").await;
    alice.fill(&create, "display_name", "Research helper").await;
    alice.submit(&create).await;
    alice
        .assert_path("/console/agents/research-helper?ok=created")
        .await;
    let agent = api.api_ok("GET", "/api/agents/research-helper", &alice_token, None);
    assert_eq!(agent["name"], "research-helper", "{agent}");
    // The owner's page: the notice, and every control she holds.
    alice.assert_text("The agent was created.").await;
    for action in OWNER_FORMS {
        alice
            .assert_present(&form(&format!("/console/agents/research-helper{action}")))
            .await;
    }
    alice
        .assert_present("form[action='/console/agents/research-helper/delete'][data-confirm]")
        .await;
    alice.shot("agent-created").await;
    alice.goto("/console").await;
    alice
        .assert_present("a[href='/console/agents/research-helper']")
        .await;
    alice.assert_text("Research helper").await;
    alice.shot("console-with-agent").await;

    // Not shared yet: bob does not see it.
    bob.goto("/console").await;
    bob.assert_absent("a[href='/console/agents/research-helper']")
        .await;
    bob.assert_text("No agents yet.").await;

    // alice shares it with bob at `use`; the form offers only levels she
    // may grant (the owner: all of them).
    alice.goto("/console/agents/research-helper").await;
    let share = form("/console/agents/research-helper/shares");
    assert_eq!(
        alice.options(&share, "level").await,
        ["view", "use", "edit", "manage", "share"]
    );
    alice.fill(&share, "user", "bob").await;
    alice.choose(&share, "level", "use").await;
    alice.submit(&share).await;
    alice
        .assert_path("/console/agents/research-helper?ok=shared")
        .await;
    alice.assert_text("The agent was shared.").await;
    alice
        .assert_present("form[action='/console/agents/research-helper/shares/bob/delete']")
        .await;
    let shares = api.api_ok(
        "GET",
        "/api/agents/research-helper/shares",
        &alice_token,
        None,
    );
    assert_eq!(shares["shares"][0]["user"]["username"], "bob", "{shares}");
    assert_eq!(shares["shares"][0]["level"], "use", "{shares}");
    alice.shot("agent-shared").await;

    // bob sees it at `use`, with none of the owner's controls.
    bob.goto("/console").await;
    bob.assert_present("a[href='/console/agents/research-helper']")
        .await;
    bob.assert_present(".level-use").await;
    bob.goto("/console/agents/research-helper").await;
    bob.assert_text("Research helper").await;
    bob.assert_present(".level-use").await;
    for action in OWNER_FORMS {
        bob.assert_absent(&form(&format!("/console/agents/research-helper{action}")))
            .await;
    }
    bob.assert_absent("form[action='/console/agents/research-helper/transfer']")
        .await;
    bob.assert_absent("form[action='/console/agents/research-helper/archive']")
        .await;
    bob.assert_absent("input[name^='field.']").await;
    assert_fits(&bob, javascript).await;
    bob.shot("agent-shared-with-me").await;
    // A form he was not given, posted from his own page with his own form
    // token (so only the policy can refuse it): refused in words, nothing
    // changed.
    let forged = bob
        .client
        .execute(
            r#"const f = document.createElement("form");
f.method = "post";
f.action = "/console/agents/research-helper/edit";
for (const [k, v] of [["csrf_token", document.querySelector("input[name=csrf_token]").value],
                      ["field.display_name", "Forged by bob"]]) {
  const i = document.createElement("input");
  i.type = "hidden"; i.name = k; i.value = v; f.appendChild(i);
}
document.body.appendChild(f);
f.submit();
return true;"#,
            vec![],
        )
        .await;
    assert!(forged.is_ok(), "could not forge the post: {forged:?}");
    super::poll("the refusal of bob's forged edit", super::STEP, || async {
        (bob.path().await == "/console/agents/research-helper/edit").then_some(())
    })
    .await;
    bob.loaded().await;
    let said = bob.text_of("p.error[role='alert']").await;
    assert!(
        !said.is_empty() && !said.contains('{'),
        "the refusal is not said in words: {said:?}"
    );
    bob.shot("forged-edit-refused").await;
    let agent = api.api_ok("GET", "/api/agents/research-helper", &alice_token, None);
    assert_eq!(agent["display_name"], "Research helper", "{agent}");

    // alice mints a `view` token: shown once, never in a URL.
    alice.goto("/console/agents/research-helper").await;
    let mint = form("/console/agents/research-helper/tokens");
    alice.choose(&mint, "level", "view").await;
    alice.choose(&mint, "expires_in", "86400").await;
    alice.fill(&mint, "label", "story reader").await;
    alice.submit(&mint).await;
    let delegated = alice.text_of("code#once-token").await;
    assert!(delegated.len() > 100, "a token: {delegated:?}");
    alice.assert_present("button[data-copy='once-token']").await;
    assert!(!alice.path().await.contains(&delegated[..40]));
    alice.shot("token-minted").await;
    let read = api.api_ok("GET", "/api/agents/research-helper", &delegated, None);
    assert_eq!(read["name"], "research-helper", "{read}");
    // Coming back to the page does not show it again; the list does.
    alice.goto("/console/agents/research-helper").await;
    alice.assert_absent("code#once-token").await;
    alice.assert_no_text(&delegated[..40]).await;
    let row = alice
        .text_of("tr:has(form[action$='/revoke'][action*='/tokens/'])")
        .await;
    for expected in ["story reader", "view", "alice"] {
        assert!(
            row.contains(expected),
            "{expected:?} not in the token row {row:?}"
        );
    }
    // She revokes it, and the API refuses it from then on.
    alice
        .submit_agreeing("form[action*='/tokens/'][action$='/revoke']", javascript)
        .await;
    alice
        .assert_path("/console/agents/research-helper?ok=token_revoked")
        .await;
    alice.assert_text("The token was revoked.").await;
    alice
        .assert_text("No delegated tokens for this agent.")
        .await;
    let (status, _) = api.api("GET", "/api/agents/research-helper", Some(&delegated), None);
    assert_eq!(status, 401, "the revoked token still works");

    // alice's memory and secrets are hers: bob's browser cannot reach them.
    let saved = api.api_ok(
        "POST",
        "/api/user-memory/save",
        &alice_token,
        Some(json!({"content": format!("note {MEMORY_CANARY}"), "title": "note"})),
    );
    let chunk = saved["hash"].as_str().expect("a chunk hash").to_owned();
    api.api_ok(
        "POST",
        "/api/secrets",
        &alice_token,
        Some(json!({"name": "ALICE_KEY", "value": SECRET_CANARY})),
    );
    for path in [
        "/api/secrets".to_owned(),
        "/api/secrets/ALICE_KEY".to_owned(),
        "/api/user-memory/browse".to_owned(),
        "/api/user-memory/search?q=canary".to_owned(),
        format!("/api/user-memory/chunk/{chunk}"),
    ] {
        bob.goto(&path).await;
        bob.assert_no_text(MEMORY_CANARY).await;
        bob.assert_no_text(SECRET_CANARY).await;
        bob.assert_no_text("ALICE_KEY").await;
    }
    // The console's pages for memory and secrets show bob his own, empty.
    for path in ["/console/memory", "/console/secrets"] {
        bob.goto(path).await;
        bob.assert_path(path).await;
        bob.assert_no_text(MEMORY_CANARY).await;
        bob.assert_no_text(SECRET_CANARY).await;
        bob.assert_no_text("ALICE_KEY").await;
    }
    bob.shot("secrets-his-own").await;
    for path in [
        format!("/console/memory/chunk/{chunk}"),
        "/console/memory?q=canary".to_owned(),
        "/console/secrets/edit?name=ALICE_KEY".to_owned(),
    ] {
        bob.goto(&path).await;
        bob.assert_no_text(MEMORY_CANARY).await;
        bob.assert_no_text(SECRET_CANARY).await;
    }
    // alice sees hers: the secret masked, with a reveal form; the chunk.
    alice.goto("/console/secrets").await;
    alice.assert_text("ALICE_KEY").await;
    alice.assert_no_text(SECRET_CANARY).await;
    alice.assert_present(&form("/console/secrets/reveal")).await;
    alice.shot("secrets").await;
    alice.goto(&format!("/console/memory/chunk/{chunk}")).await;
    alice.assert_text(MEMORY_CANARY).await;
    // Deleting asks first, on a page of its own (no script needed).
    alice
        .assert_present(&format!("a[href='/console/memory/chunk/{chunk}/delete']"))
        .await;
    alice.shot("memory-chunk").await;

    // bob signs out and lands on the sign-in page.
    bob.goto("/console").await;
    let bob_token = bob.session().await;
    bob.submit(&form("/auth/logout")).await;
    bob.assert_path("/auth/login").await;
    bob.assert_present(&sign_in).await;
    bob.shot("signed-out").await;
    assert!(bob.cookie("taos_session").await.is_none());
    let (status, _) = api.api("GET", "/auth/me", Some(&bob_token), None);
    assert_eq!(status, 401, "bob's session outlived signing out");
    // The console asks him to sign in again, and brings him back after.
    bob.goto("/console").await;
    bob.assert_path("/auth/login?next=%2Fconsole").await;
    bob.fill(&sign_in, "username", "bob").await;
    bob.fill(&sign_in, "password", BOB_PASSWORD).await;
    bob.submit(&sign_in).await;
    bob.assert_path("/console").await;

    // alice was never disturbed.
    alice.goto("/console").await;
    alice.assert_path("/console").await;

    alice.close().await;
    bob.close().await;
}

/// On a phone-sized screen a page needs no sideways scrolling (checked
/// with a script, so only where scripts run).
async fn assert_fits(browser: &Browser, javascript: bool) {
    if javascript {
        browser.assert_fits_width().await;
    }
}
