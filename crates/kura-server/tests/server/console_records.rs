//! The console's record browser over HTTP: creating and editing records as
//! the signed-in person's privilege set allows, with refusals that keep the
//! input, name the field and change nothing.

use serde_json::json;

use super::console_pages::{Console, Page};
use super::kura_id_api::{post, tenant};

const MEMBER_PASSWORD: &str = "a long member passphrase 4417";

/// The app's schema: books (title, author, price) on the layout Books; the
/// `clerk` set edits titles, sees authors, not prices; `reader` only views.
fn library() -> String {
    json!({
        "tables": [{ "name": "books", "fields": [
            { "name": "title", "type": "text" },
            { "name": "author", "type": "text" },
            { "name": "price", "type": "number" },
        ]}],
        "layouts": [{ "name": "Books", "table": "books" }],
        "privilege_sets": [
            { "name": "clerk", "extended": ["fmrest"], "tables": { "books": {
                "view": "all", "edit": "all", "fields": { "author": "view", "price": "none" } } } },
            { "name": "reader", "extended": ["fmrest"], "tables": { "books": {
                "view": "all", "fields": { "price": "none" } } } },
        ],
    })
    .to_string()
}

/// A team member invited by the owner, signed in; returns the session.
pub(super) async fn member(c: &Console, team: &str, owner: &str, email: &str) -> String {
    let r = post(
        &c.server,
        &format!("/api/v1/teams/{team}/invitations"),
        Some(owner),
        json!({ "email": email, "role": "member" }),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let token = r.json()["token"].as_str().unwrap().to_owned();
    let r = post(
        &c.server,
        "/api/v1/invitations/accept",
        None,
        json!({ "token": token, "display_name": email, "password": MEMBER_PASSWORD }),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let r = post(
        &c.server,
        "/api/v1/sessions",
        None,
        json!({ "email": email, "password": MEMBER_PASSWORD }),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text);
    r.json()["token"].as_str().unwrap().to_owned()
}

/// The owner's library app with one book; returns (app path, layout path,
/// record path).
async fn library_with_a_book(c: &Console, team: &str, owner: &str) -> (String, String, String) {
    let base = format!("/console/teams/{team}");
    let csrf = c.get(owner, &base).await.csrf();
    let r = c
        .post(
            owner,
            &format!("{base}/hosts"),
            &[("csrf", &csrf), ("name", "lib")],
        )
        .await;
    assert_eq!(r.status, 303, "{}", r.body);
    let host = c
        .get(owner, &base)
        .await
        .ids_after(&format!("{base}/hosts/"))[0]
        .clone();
    let r = c
        .post(
            owner,
            &format!("{base}/apps"),
            &[("csrf", &csrf), ("host", &host), ("app_name", "Library")],
        )
        .await;
    assert_eq!(r.status, 303, "{}", r.body);
    let app = c
        .get(owner, &base)
        .await
        .ids_after(&format!("{base}/apps/"))[0]
        .clone();
    let app_path = format!("{base}/apps/{app}");
    let r = c
        .post(
            owner,
            &format!("{app_path}/schema"),
            &[("csrf", &csrf), ("definition", &library())],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.body.contains("Schema applied"), "{}", r.body);
    let r = c
        .post(
            owner,
            &format!("{app_path}/accounts"),
            &[
                ("csrf", &csrf),
                ("email", "owner@acme.test"),
                ("privilege_set", "[Full Access]"),
            ],
        )
        .await;
    assert_eq!(r.status, 303, "{}", r.body);
    let layout = format!("{app_path}/layouts/Books");
    let r = c
        .post(
            owner,
            &format!("{layout}/records"),
            &[
                ("csrf", &csrf),
                ("field.title", "Dune"),
                ("field.author", "Herbert"),
                ("field.price", "12"),
            ],
        )
        .await;
    assert_eq!(r.status, 303, "{}", r.body);
    let list = c.get(owner, &layout).await;
    let ids = list.ids_after(&format!("{layout}/records/"));
    assert_eq!(ids.len(), 1, "{}", list.body);
    let record = format!("{layout}/records/{}", ids[0]);
    (app_path, layout, record)
}

fn modid(p: &Page) -> String {
    let prefix = "name=\"modid\" value=\"";
    let i = p.body.find(prefix).expect("a modid field") + prefix.len();
    p.body[i..i + p.body[i..].find('"').unwrap()].to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_are_created_and_edited_with_errors_beside_the_field() {
    let c = Console::boot().await;
    let t = tenant(&c.server, &c.op, "acme").await;
    let owner = t.owner.as_str();
    let (_app, layout, record) = library_with_a_book(&c, &t.id, owner).await;

    // A bad value on create: the error beside the price, the input kept.
    let csrf = c.get(owner, &layout).await.csrf();
    let r = c
        .post(
            owner,
            &format!("{layout}/records"),
            &[
                ("csrf", &csrf),
                ("field.title", "Priceless"),
                ("field.price", "not a number"),
            ],
        )
        .await;
    assert_eq!(r.status, 422, "{}", r.body);
    assert!(r.has_error("f-field.price"), "{}", r.body);
    assert!(!r.has_error("f-field.title"));
    assert!(r.body.contains("value=\"Priceless\""), "the input is kept");
    assert_eq!(
        c.get(owner, &layout)
            .await
            .ids_after(&format!("{layout}/records/"))
            .len(),
        1,
        "no record was created"
    );

    // The record page: its values in an edit form with its version.
    let page = c.get(owner, &record).await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(page.body.contains("value=\"Dune\""), "{}", page.body);
    let version = modid(&page);
    // A bad value on edit: refused beside the field, input kept, nothing
    // changed.
    let r = c
        .post(
            owner,
            &record,
            &[
                ("csrf", &csrf),
                ("modid", &version),
                ("field.title", "Dune Messiah"),
                ("field.author", "Herbert"),
                ("field.price", "cheap"),
            ],
        )
        .await;
    assert_eq!(r.status, 422, "{}", r.body);
    assert!(r.has_error("f-field.price"), "{}", r.body);
    assert!(r.body.contains("value=\"cheap\"") && r.body.contains("value=\"Dune Messiah\""));
    let page = c.get(owner, &record).await;
    assert!(page.body.contains("value=\"Dune\"") && page.body.contains("value=\"12\""));
    assert_eq!(modid(&page), version, "nothing was written");

    // A good edit saves and comes back to the record.
    let r = c
        .post(
            owner,
            &record,
            &[
                ("csrf", &csrf),
                ("modid", &version),
                ("field.title", "Dune Messiah"),
                ("field.author", "Herbert"),
                ("field.price", "14"),
            ],
        )
        .await;
    assert_eq!(r.status, 303, "{}", r.body);
    assert_eq!(
        r.location.as_deref(),
        Some(format!("{record}?ok=record-saved").as_str())
    );
    let page = c.get(owner, &record).await;
    assert!(page.body.contains("value=\"Dune Messiah\"") && page.body.contains("value=\"14\""));

    // An edit made from the old version is refused instead of overwriting.
    let r = c
        .post(
            owner,
            &record,
            &[
                ("csrf", &csrf),
                ("modid", &version),
                ("field.title", "Stale"),
                ("field.author", "Herbert"),
                ("field.price", "1"),
            ],
        )
        .await;
    assert_eq!(r.status, 409, "{}", r.body);
    assert!(r.body.contains("Someone changed this record"), "{}", r.body);
    let page = c.get(owner, &record).await;
    assert!(page.body.contains("value=\"Dune Messiah\"") && !page.body.contains("value=\"Stale\""));
    // Without the CSRF token nothing happens either.
    let r = c
        .post(
            owner,
            &record,
            &[("modid", &modid(&page)), ("field.title", "Forged")],
        )
        .await;
    assert_eq!(r.status, 403);
    assert!(!c.get(owner, &record).await.body.contains("Forged"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_edit_only_what_their_privilege_set_allows() {
    let c = Console::boot().await;
    let t = tenant(&c.server, &c.op, "acme").await;
    let owner = t.owner.as_str();
    let (app, _layout, record) = library_with_a_book(&c, &t.id, owner).await;
    let clerk = member(&c, &t.id, owner, "clerk@acme.test").await;
    let reader = member(&c, &t.id, owner, "reader@acme.test").await;
    let csrf = c.get(owner, &app).await.csrf();
    for (email, set) in [("clerk@acme.test", "clerk"), ("reader@acme.test", "reader")] {
        let r = c
            .post(
                owner,
                &format!("{app}/accounts"),
                &[("csrf", &csrf), ("email", email), ("privilege_set", set)],
            )
            .await;
        assert_eq!(r.status, 303, "{}", r.body);
    }

    // The clerk edits the title, sees the author read-only and no price.
    let page = c.get(&clerk, &record).await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(page.body.contains("id=\"f-field.title\""), "{}", page.body);
    assert!(!page.body.contains("id=\"f-field.author\""));
    assert!(page.body.contains("data-field=\"author\""));
    assert!(!page.body.contains("price") && !page.body.contains(">12<"));
    let clerk_csrf = page.csrf();
    let r = c
        .post(
            &clerk,
            &record,
            &[
                ("csrf", &clerk_csrf),
                ("modid", &modid(&page)),
                ("field.title", "Children of Dune"),
            ],
        )
        .await;
    assert_eq!(r.status, 303, "{}", r.body);
    // A price posted anyway is refused by the privilege set; nothing changes.
    let page = c.get(&clerk, &record).await;
    let r = c
        .post(
            &clerk,
            &record,
            &[
                ("csrf", &clerk_csrf),
                ("modid", &modid(&page)),
                ("field.title", "Cheap Dune"),
                ("field.price", "1"),
            ],
        )
        .await;
    assert!(r.status.is_client_error(), "{} {}", r.status, r.body);
    let seen = c.get(owner, &record).await;
    assert!(
        seen.body.contains("value=\"Children of Dune\""),
        "{}",
        seen.body
    );
    assert!(seen.body.contains("value=\"12\"") && !seen.body.contains("Cheap Dune"));

    // The reader sees the record without a form; a forced edit is refused.
    let page = c.get(&reader, &record).await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(!page.body.contains("name=\"modid\""), "no edit form");
    assert!(page.body.contains("does not let you change it"));
    assert!(!page.body.contains("Delete record"));
    let r = c
        .post(
            &reader,
            &record,
            &[
                ("csrf", &page.csrf()),
                ("modid", &modid(&seen)),
                ("field.title", "Read only?"),
            ],
        )
        .await;
    assert_eq!(r.status, 403, "{}", r.body);
    assert!(!c.get(owner, &record).await.body.contains("Read only?"));
}
