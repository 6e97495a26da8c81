//! The schema editor's forms over HTTP: relationships, value lists and
//! privilege sets are added to the app's definition, and a bad form is
//! refused with its input kept and the schema unchanged.

use serde_json::{Value, json};

use super::console_pages::{Console, Page, team_with_app};
use super::kura_id_api::tenant;

/// The definition the app page's JSON editor holds.
fn definition(p: &Page) -> Value {
    let start = p.body.find("id=\"f-definition\"").expect("the editor");
    let open = start + p.body[start..].find('>').unwrap() + 1;
    let close = open + p.body[open..].find("</textarea>").unwrap();
    let text = p.body[open..close]
        .replace("&quot;", "\"")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&#39;", "'")
        .replace("&amp;", "&");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relationships_value_lists_and_privilege_sets_are_added_by_form() {
    let c = Console::boot().await;
    let t = tenant(&c.server, &c.op, "acme").await;
    let owner = t.owner.as_str();
    let (team, _host, app) = team_with_app(&c, owner, &t.id).await;
    let base = format!("/console/teams/{team}/apps/{app}");
    let csrf = c.get(owner, &base).await.csrf();
    let tables = json!({ "tables": [
        { "name": "books", "fields": [{ "name": "title", "type": "text" }, { "name": "author_id", "type": "number" }] },
        { "name": "authors", "fields": [{ "name": "id", "type": "number" }, { "name": "name", "type": "text" }] },
    ]})
    .to_string();
    let r = c
        .post(
            owner,
            &format!("{base}/schema"),
            &[("csrf", &csrf), ("definition", &tables)],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let before = definition(&c.get(owner, &base).await);

    // Relationships: a missing name, and a field that does not exist, are
    // refused with the input kept; nothing changes.
    let rel = format!("{base}/relationships");
    let r = c
        .post(
            owner,
            &rel,
            &[
                ("csrf", &csrf),
                ("rel_name", ""),
                ("rel_left", "books::author_id"),
                ("rel_right", "authors::id"),
            ],
        )
        .await;
    assert_eq!(r.status, 422);
    assert!(
        r.body.contains("Enter a name for the relationship"),
        "{}",
        r.body
    );
    let r = c
        .post(
            owner,
            &rel,
            &[
                ("csrf", &csrf),
                ("rel_name", "book_author"),
                ("rel_left", "books::author_id"),
                ("rel_right", "authors::nope"),
            ],
        )
        .await;
    assert_eq!(r.status, 422, "{}", r.body);
    assert!(r.body.contains("value=\"book_author\""), "the name is kept");
    assert_eq!(
        definition(&c.get(owner, &base).await),
        before,
        "nothing changed"
    );
    let r = c
        .post(
            owner,
            &rel,
            &[
                ("csrf", &csrf),
                ("rel_name", "book_author"),
                ("rel_left", "books::author_id"),
                ("rel_right", "authors::id"),
            ],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.body.contains("Schema applied"));
    let def = definition(&c.get(owner, &base).await);
    assert_eq!(
        def["relationships"],
        json!([{ "name": "book_author", "left_table": "books", "left_field": "author_id", "right_table": "authors", "right_field": "id" }])
    );

    // Value lists: values are needed; blank lines are dropped.
    let vl = format!("{base}/value-lists");
    let r = c
        .post(
            owner,
            &vl,
            &[
                ("csrf", &csrf),
                ("vl_name", "genres"),
                ("vl_values", " \n "),
            ],
        )
        .await;
    assert_eq!(r.status, 422);
    assert!(r.body.contains("at least one value"), "{}", r.body);
    let r = c
        .post(
            owner,
            &vl,
            &[
                ("csrf", &csrf),
                ("vl_name", "genres"),
                ("vl_values", "Fiction\n\n Poetry \r\nHistory"),
            ],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let def = definition(&c.get(owner, &base).await);
    assert_eq!(
        def["value_lists"],
        json!([{ "name": "genres", "values": ["Fiction", "Poetry", "History"] }])
    );

    // Privilege sets: an unknown access is refused; a good set is stored
    // with exactly the rights chosen (untouched tables left out).
    let ps = format!("{base}/privilege-sets");
    let r = c
        .post(
            owner,
            &ps,
            &[
                ("csrf", &csrf),
                ("ps_name", "clerk"),
                ("ps_view.books", "everything"),
            ],
        )
        .await;
    assert_eq!(r.status, 422);
    assert!(r.body.contains("table `books`"), "{}", r.body);
    let r = c
        .post(
            owner,
            &ps,
            &[
                ("csrf", &csrf),
                ("ps_name", "clerk"),
                ("ps_fmrest", "on"),
                ("ps_view.books", "all"),
                ("ps_edit.books", "own"),
                ("ps_delete.books", "none"),
                ("ps_create.books", "on"),
                ("ps_view.authors", "none"),
                ("ps_edit.authors", "none"),
                ("ps_delete.authors", "none"),
            ],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let def = definition(&c.get(owner, &base).await);
    let set = &def["privilege_sets"][0];
    assert_eq!(set["name"], "clerk");
    assert_eq!(set["extended"], json!(["fmrest"]));
    assert_eq!(set["tables"]["books"]["view"], "all");
    assert_eq!(set["tables"]["books"]["edit"], "own");
    assert_eq!(set["tables"]["books"]["delete"], "none");
    assert_eq!(set["tables"]["books"]["create"], true);
    assert!(set["tables"].get("authors").is_none(), "{set}");
    // The same name again is refused by the schema's own rules.
    let r = c
        .post(
            owner,
            &ps,
            &[
                ("csrf", &csrf),
                ("ps_name", "clerk"),
                ("ps_view.books", "all"),
            ],
        )
        .await;
    assert_eq!(r.status, 422, "{}", r.body);
    assert_eq!(
        definition(&c.get(owner, &base).await),
        def,
        "nothing changed"
    );

    // A member without AppsOperate cannot add anything.
    let m = super::console_records::member(&c, &t.id, owner, "m@acme.test").await;
    let mcsrf = c.get(&m, &base).await.csrf();
    let r = c
        .post(
            &m,
            &vl,
            &[("csrf", &mcsrf), ("vl_name", "sneaky"), ("vl_values", "x")],
        )
        .await;
    assert_eq!(r.status, 403, "{}", r.body);
    assert_eq!(
        definition(&c.get(owner, &base).await),
        def,
        "nothing changed"
    );
}
