//! The console's one script, `static/app.js`, in a real browser: a form
//! marked `data-confirm` asks before it posts, and posts only when the
//! person agrees. (The harness's `submit_confirmed` is what the agent,
//! secrets and admin pages' delete forms will be driven with.)

use super::{bounded, form, OtherOrigin, Profile, Rig};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_confirmed_form_asks_first() {
    bounded(async {
        let rig = Rig::new("prompts");
        let site = OtherOrigin::start().await;
        // A page holding a form as the console writes them, with tessera's
        // own script (a page elsewhere may load it like any script).
        site.serve(
            "/done",
            "<!doctype html><title>done</title><p>posted".into(),
        );
        let page = site.serve(
            "/form",
            format!(
                r#"<!doctype html><title>form</title>
<script src="{tessera}/static/app.js" defer></script>
<form method="get" action="/done" data-confirm="Delete research-helper?">
<button type="submit">Delete</button>
</form>"#,
                tessera = rig.tessera.base
            ),
        );
        let browser = rig.browser("alice", Profile::DESKTOP).await;
        browser.goto(&page).await;
        browser.loaded().await;
        let delete = form("/done");
        let asked = browser.submit_confirmed(&delete, false).await;
        assert_eq!(asked, "Delete research-helper?");
        browser.assert_path("/form").await;
        let asked = browser.submit_confirmed(&delete, true).await;
        assert_eq!(asked, "Delete research-helper?");
        assert!(browser.path().await.starts_with("/done"));
        browser.assert_text("posted").await;
        browser.close().await;
    })
    .await;
}
