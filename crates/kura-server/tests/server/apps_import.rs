//! CSV import over the admin API: rows are checked with the Data API's
//! rules, the whole file commits or nothing does (the error names the line
//! and the field), auto-entered values are filled in, a `data.import`
//! event is recorded, and the imported records are what the Data API
//! then serves. Every record change (import, create, edit, duplicate,
//! delete) is in the app's change outbox; refused writes are not.

use kura_store::app_data::{AppData, ChangeKind};
use kura_types::AppId;
use reqwest::Method;
use serde_json::{Value, json};

use super::fmi::{ADMIN_PASSWORD, DB, Fixture, LIMITED_PASSWORD, fixture, fm, login};
use super::kura_id_api::get;

async fn import(f: &Fixture, table: &str, content_type: &str, csv: &str) -> (u16, Value) {
    let resp = f
        .server
        .client
        .post(f.server.url(&format!(
            "/api/v1/teams/{}/apps/{}/tables/{table}/import",
            f.team, f.app
        )))
        .bearer_auth(&f.operator)
        .header("content-type", content_type)
        .body(csv.to_owned())
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

async fn total(f: &Fixture, token: &str) -> u64 {
    let (_, v, _) = fm(
        &f.server,
        Method::GET,
        &format!("{DB}/layouts/contacts/records?_limit=1"),
        Some(&format!("Bearer {token}")),
        None,
    )
    .await;
    v["response"]["dataInfo"]["totalRecordCount"]
        .as_u64()
        .unwrap_or(0)
}

/// Pages of more than 100 records are streamed (written while they are
/// read); they must say exactly what a page answered whole says, and
/// every error must still arrive with its FileMaker code and status.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_pages_are_streamed_and_agree_with_whole_pages() {
    let f = fixture().await;
    let mut csv = String::from("first_name,last_name,email,age\n");
    for i in 0..600 {
        csv.push_str(&format!("P{i},Person,p{i}@x.test,{}\n", i % 70));
    }
    let (status, v) = import(&f, "contacts", "text/csv", &csv).await;
    assert_eq!((status, &v["imported"]), (200, &json!(600)), "{v}");
    let admin = format!("Bearer {}", login(&f.server, "admin", ADMIN_PASSWORD).await);
    let limited = format!(
        "Bearer {}",
        login(&f.server, "limited", LIMITED_PASSWORD).await
    );
    let range = |q: &str| format!("{DB}/layouts/contacts/records?{q}");

    let (status, streamed, headers) = fm(
        &f.server,
        Method::GET,
        &range("_limit=500"),
        Some(&admin),
        None,
    )
    .await;
    assert_eq!(status, 200, "{streamed}");
    assert!(
        headers.get("content-length").is_none(),
        "a 500-record page is streamed, not sized up front: {headers:?}"
    );
    assert_eq!(headers.get("cache-control").unwrap(), "no-store");
    let info = &streamed["response"]["dataInfo"];
    assert_eq!(
        (
            &info["totalRecordCount"],
            &info["foundCount"],
            &info["returnedCount"]
        ),
        (&json!(600), &json!(600), &json!(500))
    );
    let data = streamed["response"]["data"].as_array().unwrap();
    assert_eq!(data.len(), 500);
    let ids: Vec<i64> = data
        .iter()
        .map(|r| r["recordId"].as_str().unwrap().parse().unwrap())
        .collect();
    assert_eq!(ids, (1..=500).collect::<Vec<i64>>());
    assert_eq!(streamed["messages"][0]["code"], "0");

    // The same records as whole pages of 100.
    let (_, whole, headers) = fm(
        &f.server,
        Method::GET,
        &range("_offset=101&_limit=100"),
        Some(&admin),
        None,
    )
    .await;
    assert!(headers.get("content-length").is_some());
    assert_eq!(
        whole["response"]["data"].as_array().unwrap()[..],
        data[100..200]
    );

    // The tail of the found set.
    let (_, tail, _) = fm(
        &f.server,
        Method::GET,
        &range("_offset=551&_limit=500"),
        Some(&admin),
        None,
    )
    .await;
    assert_eq!(tail["response"]["dataInfo"]["returnedCount"], 50);
    assert_eq!(tail["response"]["data"].as_array().unwrap().len(), 50);

    // A streamed find, sorted, under a privilege set that hides a field.
    let find = |limit: u32, query: Value, sort: Value| json!({ "query": query, "limit": limit.to_string(), "sort": sort });
    let (status, found, _) = fm(
        &f.server,
        Method::POST,
        &format!("{DB}/layouts/contacts/_find"),
        Some(&limited),
        Some(find(
            1_000,
            json!([{ "age": "10...19" }]),
            json!([{ "fieldName": "age", "sortOrder": "descend" }]),
        )),
    )
    .await;
    assert_eq!(status, 200, "{found}");
    let rows = found["response"]["data"].as_array().unwrap();
    assert_eq!(rows.len(), 90, "ages 10-19, 9 records each");
    assert_eq!(found["response"]["dataInfo"]["returnedCount"], 90);
    let ages: Vec<i64> = rows
        .iter()
        .map(|r| r["fieldData"]["age"].as_i64().unwrap())
        .collect();
    assert!(ages.windows(2).all(|w| w[0] >= w[1]), "{ages:?}");
    assert!(rows.iter().all(|r| r["fieldData"].get("email").is_none()));

    // Errors are the same whether the page would have been streamed or not.
    for (query, sort) in [
        (json!([{ "age": ">1000" }]), json!([])),
        (json!([{ "nope": "1" }]), json!([])),
        (json!([{ "age": "1" }]), json!([{ "fieldName": "nope" }])),
    ] {
        let mut answers = Vec::new();
        for limit in [10, 1_000] {
            let (status, v, _) = fm(
                &f.server,
                Method::POST,
                &format!("{DB}/layouts/contacts/_find"),
                Some(&admin),
                Some(find(limit, query.clone(), sort.clone())),
            )
            .await;
            assert_ne!(status, 200, "{v}");
            answers.push((status, v["messages"][0]["code"].clone()));
        }
        assert_eq!(answers[0], answers[1], "{query} {sort}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn csv_import_is_validated_and_all_or_nothing() {
    let f = fixture().await;
    let token = login(&f.server, "admin", ADMIN_PASSWORD).await;
    assert_eq!(total(&f, &token).await, 0);

    // Each bad file is refused with its line and field, and stores nothing
    // (the good rows before the bad one included).
    let refused = [
        (
            "first_name,email,age\nAda,ada@x.test,36\nGrace,grace@x.test,many\n",
            "line 3",
            "age",
        ),
        (
            "first_name,kind\nAda,home\nGrace,office\n",
            "line 3",
            "kind",
        ),
        (
            "first_name,email\nAda,same@x.test\nGrace,same@x.test\n",
            "line 3",
            "email",
        ),
        (
            "first_name,last_name\nAda,Lovelace\n,Hopper\n",
            "line 3",
            "first_name",
        ),
        (
            &format!("first_name\nAda\n{}\n", "x".repeat(51)),
            "line 3",
            "first_name",
        ),
        ("first_name,shoe_size\nAda,38\n", "line 1", "shoe_size"),
        ("first_name,photo\nAda,\n", "line 1", "photo"),
        (
            "first_name,age\nAda,36\nGrace\n",
            "line 3",
            "header names 2",
        ),
        ("first_name\n\"Ada\n", "line 2", "never closed"),
    ];
    for (csv, line, field) in refused {
        let (status, v) = import(&f, "contacts", "text/csv", csv).await;
        assert_eq!(status, 422, "{csv}: {v}");
        let detail = v["detail"].as_str().unwrap_or_default();
        assert!(
            detail.contains(line) && detail.contains(field),
            "{csv}: {detail}"
        );
        assert_eq!(total(&f, &token).await, 0, "{csv} left records behind");
    }
    // Wrong media type, unknown table, unknown app.
    let (status, _) = import(&f, "contacts", "application/json", "first_name\nAda\n").await;
    assert_eq!(status, 422);
    let (status, _) = import(&f, "nope", "text/csv", "first_name\nAda\n").await;
    assert_eq!(status, 404);
    assert_eq!(total(&f, &token).await, 0);

    // A good file: quoting, CRLF, dates, empty values, auto-entry.
    let mut csv = String::from("First_Name,last_name,email,age,born,kind,notes\r\n");
    csv.push_str("Ada,Lovelace,ada@x.test,36,12/10/1815,home,\"Analyst, \"\"first\"\"\"\r\n");
    csv.push_str("Grace,Hopper,grace@x.test,,1906-12-09,work,\"two\nlines\"\r\n");
    for i in 0..2_500 {
        csv.push_str(&format!("P{i},Person,p{i}@x.test,{},,mobile,\r\n", i % 90));
    }
    let (status, v) = import(&f, "contacts", "text/csv; charset=utf-8", &csv).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["imported"], 2_502);
    assert_eq!(v["table"], "contacts");
    assert_eq!(v["fields"][0], "first_name");
    assert_eq!(total(&f, &token).await, 2_502);

    let (status, v, _) = fm(
        &f.server,
        Method::POST,
        &format!("{DB}/layouts/contacts/_find"),
        Some(&format!("Bearer {token}")),
        Some(serde_json::json!({ "query": [{ "email": "==grace@x.test" }] })),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    let grace = &v["response"]["data"][0]["fieldData"];
    assert_eq!(grace["last_name"], "Hopper");
    assert_eq!(grace["born"], "12/09/1906");
    assert_eq!(grace["notes"], "two\nlines");
    assert_eq!(grace["age"], "");
    assert_eq!(grace["id"], 2);
    assert!(!grace["created_at"].as_str().unwrap_or_default().is_empty());
    assert!(!grace["created_by"].as_str().unwrap_or_default().is_empty());

    // Uniqueness holds against records already stored: nothing more lands.
    let (status, v) = import(
        &f,
        "contacts",
        "text/csv",
        "first_name,email\nNew,new@x.test\nDup,ada@x.test\n",
    )
    .await;
    assert_eq!(status, 422, "{v}");
    assert!(v["detail"].as_str().unwrap_or_default().contains("line 3"));
    assert_eq!(total(&f, &token).await, 2_502);

    // Each import that committed is one `data.import` event.
    let r = get(
        &f.server,
        "/api/v1/events?action=data.import&limit=100",
        &f.operator,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let page = r.json();
    let events = page["events"].as_array().unwrap();
    assert_eq!(events.len(), 1, "{page}");
    assert_eq!(events[0]["target"], f.app.as_str());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_record_change_lands_in_the_outbox_with_its_transaction() {
    let f = fixture().await;
    let (status, v) = import(
        &f,
        "contacts",
        "text/csv",
        "first_name,email\nAda,ada@x.test\nGrace,grace@x.test\n",
    )
    .await;
    assert_eq!(status, 200, "{v}");
    let token = login(&f.server, "admin", ADMIN_PASSWORD).await;
    let auth = format!("Bearer {token}");
    let records = format!("{DB}/layouts/contacts/records");
    let (status, v, _) = fm(
        &f.server,
        Method::POST,
        &records,
        Some(&auth),
        Some(json!({ "fieldData": { "first_name": "Cy" } })),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    let cy = v["response"]["recordId"].as_str().unwrap().to_owned();
    let (status, v, _) = fm(
        &f.server,
        Method::PATCH,
        &format!("{records}/{cy}"),
        Some(&auth),
        Some(json!({ "fieldData": { "last_name": "Young" } })),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    let (status, v, _) = fm(
        &f.server,
        Method::POST,
        &format!("{records}/{cy}"),
        Some(&auth),
        Some(json!({})),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    let copy = v["response"]["recordId"].as_str().unwrap().to_owned();
    let (status, v, _) = fm(
        &f.server,
        Method::DELETE,
        &format!("{records}/1"),
        Some(&auth),
        None,
    )
    .await;
    assert_eq!(status, 200, "{v}");
    // Refused writes leave no entry: a validation failure, a stale modId.
    let (status, _, _) = fm(
        &f.server,
        Method::POST,
        &records,
        Some(&auth),
        Some(json!({ "fieldData": { "first_name": "" } })),
    )
    .await;
    assert_eq!(status, 500);
    let (status, _, _) = fm(
        &f.server,
        Method::PATCH,
        &format!("{records}/{cy}"),
        Some(&auth),
        Some(json!({ "fieldData": { "notes": "x" }, "modId": "0" })),
    )
    .await;
    assert_eq!(status, 500);

    let app: AppId = f.app.parse().unwrap();
    let data = AppData::new(f.server.storage.apps.open(app).await.unwrap());
    let changes = data.read(|r| r.changes_after(0, 100)).await.unwrap();
    let got: Vec<(i64, ChangeKind, i64)> =
        changes.iter().map(|c| (c.rid, c.kind, c.modid)).collect();
    let (cy, copy): (i64, i64) = (cy.parse().unwrap(), copy.parse().unwrap());
    assert_eq!(
        got,
        vec![
            (1, ChangeKind::Import, 0),
            (2, ChangeKind::Import, 0),
            (cy, ChangeKind::Create, 0),
            (cy, ChangeKind::Edit, 1),
            (copy, ChangeKind::Duplicate, 0),
            (1, ChangeKind::Delete, 0),
        ]
    );
    assert_eq!(changes[2].account, "admin");
    assert_eq!(changes[0].account, changes[1].account);
    assert_ne!(changes[0].account, "admin");
    let table = changes[0].table;
    assert!(changes.iter().all(|c| c.table == table && c.at_ms > 0));
    // The cursor moves on.
    let after = changes[3].seq;
    let rest = data
        .read(move |r| r.changes_after(after, 100))
        .await
        .unwrap();
    assert_eq!(rest.len(), 2);
}
