//! CSV import through the console over HTTP: a multipart form whose CSRF
//! field comes first; good files are imported in one go, a bad row or a
//! missing token imports nothing.

use reqwest::multipart::{Form, Part};
use serde_json::json;

use super::console_pages::{Console, team_with_app};
use super::kura_id_api::tenant;

fn form(csrf: Option<&str>, table: &str, csv: &str) -> Form {
    let mut f = Form::new();
    if let Some(c) = csrf {
        f = f.text("csrf", c.to_owned());
    }
    f.text("table", table.to_owned()).part(
        "file",
        Part::bytes(csv.as_bytes().to_vec())
            .file_name("books.csv")
            .mime_str("text/csv")
            .unwrap(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_csv_file_is_imported_whole_or_not_at_all() {
    let c = Console::boot().await;
    let t = tenant(&c.server, &c.op, "acme").await;
    let owner = t.owner.as_str();
    let (team, _host, app) = team_with_app(&c, owner, &t.id).await;
    let base = format!("/console/teams/{team}/apps/{app}");
    let csrf = c.get(owner, &base).await.csrf();
    let def = json!({
        "tables": [{ "name": "books", "fields": [{ "name": "title", "type": "text" }, { "name": "price", "type": "number" }] }],
        "layouts": [{ "name": "Books", "table": "books" }],
    })
    .to_string();
    let r = c
        .post(
            owner,
            &format!("{base}/schema"),
            &[("csrf", &csrf), ("definition", &def)],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let r = c
        .post(
            owner,
            &format!("{base}/accounts"),
            &[
                ("csrf", &csrf),
                ("email", "owner@acme.test"),
                ("privilege_set", "[Full Access]"),
            ],
        )
        .await;
    assert_eq!(r.status, 303, "{}", r.body);
    let import = format!("{base}/import");
    let page = c.get(owner, &import).await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(page.body.contains("enctype=\"multipart/form-data\""));
    let count = || async {
        let p = c.get(owner, &format!("{base}/layouts/Books")).await;
        p.body.matches("<td data-label=\"title\">").count()
    };

    // A bad value on the third line: refused beside the file, nothing in.
    let r = c
        .post_multipart(
            owner,
            &import,
            form(Some(&csrf), "books", "title,price\nDune,12\nEmma,cheap\n"),
        )
        .await;
    assert_eq!(r.status, 422, "{}", r.body);
    assert!(r.has_error("f-file"), "{}", r.body);
    assert!(r.body.contains("Nothing was imported"), "{}", r.body);
    assert!(
        r.body.contains("<option value=\"books\" selected"),
        "the table is kept"
    );
    assert_eq!(count().await, 0);
    // No file, and a file that is not UTF-8: refused the same way.
    let r = c
        .post_multipart(
            owner,
            &import,
            Form::new()
                .text("csrf", csrf.clone())
                .text("table", "books"),
        )
        .await;
    assert_eq!(r.status, 422);
    assert!(r.body.contains("Choose a CSV file"), "{}", r.body);
    let latin1 = Form::new()
        .text("csrf", csrf.clone())
        .text("table", "books")
        .part(
            "file",
            Part::bytes(b"title,price\nCaf\xe9,1\n".to_vec()).file_name("x.csv"),
        );
    let r = c.post_multipart(owner, &import, latin1).await;
    assert_eq!(r.status, 422);
    assert!(r.body.contains("not UTF-8"), "{}", r.body);
    // Without the CSRF token (or with it after the file) nothing happens.
    let r = c
        .post_multipart(
            owner,
            &import,
            form(None, "books", "title,price\nForged,1\n"),
        )
        .await;
    assert_eq!(r.status, 403);
    let late = Form::new()
        .text("table", "books")
        .part(
            "file",
            Part::bytes(b"title,price\nForged,1\n".to_vec()).file_name("x.csv"),
        )
        .text("csrf", csrf.clone());
    assert_eq!(c.post_multipart(owner, &import, late).await.status, 403);
    assert_eq!(count().await, 0);
    assert!(!c.actions().await.contains(&"data.import".to_owned()));

    // A good file: every row, one event, and the page says how many.
    let r = c
        .post_multipart(
            owner,
            &import,
            form(
                Some(&csrf),
                "books",
                "title,price\nDune,12\nEmma,8\nUlysses,15\n",
            ),
        )
        .await;
    assert_eq!(r.status, 303, "{}", r.body);
    let to = r.location.unwrap();
    assert!(to.contains("ok=imported") && to.contains("rows=3"), "{to}");
    let done = c.get(owner, &to).await;
    assert!(done.body.contains("Imported 3 row(s)"), "{}", done.body);
    assert_eq!(count().await, 3);
    let events = super::kura_id_api::logged_actions(&c.server.events).await;
    let imports: Vec<_> = events
        .iter()
        .filter(|e| e.action.as_str() == "data.import")
        .collect();
    assert_eq!(imports.len(), 1);
    assert_eq!(imports[0].details.get("rows"), Some(&json!("3")));

    // A member may read the app but not import into it.
    let m = super::console_records::member(&c, &t.id, owner, "m@acme.test").await;
    let mcsrf = c.get(&m, &import).await.csrf();
    let r = c
        .post_multipart(
            &m,
            &import,
            form(Some(&mcsrf), "books", "title,price\nSneaky,1\n"),
        )
        .await;
    assert_eq!(r.status, 403, "{}", r.body);
    assert_eq!(count().await, 3);
}
