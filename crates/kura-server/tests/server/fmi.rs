//! Hosted apps over the admin API and the FileMaker Data API over real TLS:
//! schema apply, app accounts, privilege sets, records, finds, portals,
//! containers, scripts, error codes and the "bad input changes nothing"
//! rule. The unmodified python-fmrest and @proofgeist/fmdapi clients run
//! against the same fixture in `peers`.

use base64::Engine as _;
use kura_testkit::TestServer;
use reqwest::Method;
use serde_json::{Value, json};

use super::kura_id_api::{Reply, call, get, post};

pub(crate) const ADMIN_PASSWORD: &str = "contacts admin pass 4471";
pub(crate) const LIMITED_PASSWORD: &str = "limited reader pass 9083";

/// The fixture app every Data API test uses (described once, in JSON).
pub(crate) fn contacts_definition() -> Value {
    json!({
        "tables": [
            { "name": "contacts", "fields": [
                { "name": "id", "type": "number", "auto_enter": { "serial": { "next": 1, "increment": 1 } }, "unique": true },
                { "name": "first_name", "type": "text", "required": true, "max_length": 50 },
                { "name": "last_name", "type": "text" },
                { "name": "email", "type": "text", "unique": true },
                { "name": "age", "type": "number" },
                { "name": "born", "type": "date" },
                { "name": "notes", "type": "text" },
                { "name": "photo", "type": "container" },
                { "name": "kind", "type": "text", "value_list": "kinds" },
                { "name": "created_at", "type": "timestamp", "auto_enter": "creation_timestamp" },
                { "name": "created_by", "type": "text", "auto_enter": "creation_account" },
                { "name": "g_filter", "type": "text", "global": true }
            ]},
            { "name": "phones", "fields": [
                { "name": "contact_id", "type": "number" },
                { "name": "number", "type": "text", "required": true },
                { "name": "kind", "type": "text", "value_list": "kinds" }
            ]}
        ],
        "relationships": [
            { "name": "contact_phones", "left_table": "contacts", "left_field": "id",
              "right_table": "phones", "right_field": "contact_id" }
        ],
        "layouts": [
            { "name": "contacts", "table": "contacts",
              "fields": ["id", "first_name", "last_name", "email", "age", "born", "notes", "photo", "kind", "created_at", "created_by", "g_filter"],
              "portals": [ { "name": "phones", "relationship": "contact_phones", "fields": ["number", "kind"] } ] },
            { "name": "phones", "table": "phones" },
            { "name": "contact_names", "table": "contacts", "fields": ["first_name", "last_name"] }
        ],
        "value_lists": [ { "name": "kinds", "values": ["home", "work", "mobile"] } ],
        "scripts": [
            { "name": "count_smiths", "steps": [
                { "go_to_layout": "contacts" },
                { "find": { "last_name": "=={{param}}" } },
                { "exit_script": "{{found_count}}" }
            ]},
            { "name": "add_note", "steps": [
                { "go_to_layout": "contacts" },
                { "new_record": { "first_name": "Scripted", "notes": "{{param}}" } },
                { "exit_script": "{{field:first_name}} {{record_id}}" }
            ]}
        ],
        "privilege_sets": [
            { "name": "reader", "extended": ["fmrest"],
              "tables": { "contacts": { "view": "all", "fields": { "email": "none" } },
                          "phones": { "view": "all" } } },
            { "name": "no_api", "extended": [],
              "tables": { "contacts": { "view": "all" } } }
        ]
    })
}

/// A fixture: a team with a host `acme` and an app `Contacts` with two
/// accounts, created by the first operator through the admin API.
pub(crate) struct Fixture {
    pub(crate) server: TestServer,
    pub(crate) operator: String,
    pub(crate) team: String,
    pub(crate) app: String,
}

pub(crate) async fn fixture() -> Fixture {
    let server = TestServer::spawn().await;
    let op = server.sign_up_first_operator().await;
    let t = op.token.clone();
    let r = post(
        &server,
        "/api/v1/teams",
        Some(&t),
        json!({ "name": "Acme", "owner_email": "owner@acme.test" }),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let team = r.json()["id"].as_str().unwrap().to_owned();
    let r = post(
        &server,
        &format!("/api/v1/teams/{team}/hosts"),
        Some(&t),
        json!({ "name": "acme" }),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let host = r.json()["id"].as_str().unwrap().to_owned();
    assert_eq!(r.json()["data_api"], "/hosts/acme/fmi/data/vLatest");
    let r = post(
        &server,
        &format!("/api/v1/teams/{team}/hosts/{host}/apps"),
        Some(&t),
        json!({ "name": "Contacts", "definition": contacts_definition() }),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let app = r.json()["id"].as_str().unwrap().to_owned();
    for (name, password, set) in [
        ("admin", ADMIN_PASSWORD, "[Full Access]"),
        ("limited", LIMITED_PASSWORD, "reader"),
        ("noapi", LIMITED_PASSWORD, "no_api"),
    ] {
        let r = post(
            &server,
            &format!("/api/v1/teams/{team}/apps/{app}/accounts"),
            Some(&t),
            json!({ "name": name, "password": password, "privilege_set": set }),
        )
        .await;
        assert_eq!(r.status, 201, "{}", r.text);
    }
    Fixture {
        server,
        operator: t,
        team,
        app,
    }
}

pub(crate) const DB: &str = "/hosts/acme/fmi/data/vLatest/databases/Contacts";

fn basic(user: &str, password: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}

pub(crate) async fn fm(
    server: &TestServer,
    method: Method,
    path: &str,
    auth: Option<&str>,
    body: Option<Value>,
) -> (u16, Value, reqwest::header::HeaderMap) {
    let mut req = server.client.request(method, server.url(path));
    if let Some(a) = auth {
        req = req.header("authorization", a);
    }
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let text = resp.text().await.unwrap();
    let v: Value =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: not JSON ({e}): {text}"));
    // The envelope every client depends on.
    assert!(v["response"].is_object(), "{path}: {v}");
    assert!(v["messages"][0]["code"].is_string(), "{path}: {v}");
    (status, v, headers)
}

fn code(v: &Value) -> &str {
    v["messages"][0]["code"].as_str().unwrap()
}

pub(crate) async fn login(server: &TestServer, user: &str, password: &str) -> String {
    let (status, v, headers) = fm(
        server,
        Method::POST,
        &format!("{DB}/sessions"),
        Some(&basic(user, password)),
        Some(json!({})),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    let token = v["response"]["token"].as_str().unwrap().to_owned();
    assert_eq!(
        headers
            .get("x-fm-data-access-token")
            .unwrap()
            .to_str()
            .unwrap(),
        token
    );
    token
}

fn bearer(t: &str) -> String {
    format!("Bearer {t}")
}

async fn count(server: &TestServer, token: &str) -> u64 {
    let (_, v, _) = fm(
        server,
        Method::GET,
        &format!("{DB}/layouts/contacts/records?_limit=1"),
        Some(&bearer(token)),
        None,
    )
    .await;
    v["response"]["dataInfo"]["totalRecordCount"]
        .as_u64()
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_api_records_finds_portals_and_errors() {
    let f = fixture().await;
    let s = &f.server;

    // Bad credentials: 401 + 212, and the same for an unknown account.
    let (status, v, _) = fm(
        s,
        Method::POST,
        &format!("{DB}/sessions"),
        Some(&basic("admin", "wrong password!!")),
        None,
    )
    .await;
    assert_eq!((status, code(&v)), (401, "212"));
    let (status, v, _) = fm(
        s,
        Method::POST,
        &format!("{DB}/sessions/"),
        Some(&basic("nobody", "wrong password!!")),
        None,
    )
    .await;
    assert_eq!((status, code(&v)), (401, "212"));
    // A privilege set without fmrest cannot use the Data API.
    let (status, v, _) = fm(
        s,
        Method::POST,
        &format!("{DB}/sessions"),
        Some(&basic("noapi", LIMITED_PASSWORD)),
        None,
    )
    .await;
    assert_eq!((status, code(&v)), (401, "9"), "{v}");
    // Unknown database: 802.
    let (status, v, _) = fm(
        s,
        Method::POST,
        "/hosts/acme/fmi/data/v1/databases/Nope/sessions",
        Some(&basic("admin", ADMIN_PASSWORD)),
        None,
    )
    .await;
    assert_eq!((status, code(&v)), (500, "802"));

    let token = login(s, "admin", ADMIN_PASSWORD).await;
    let auth = bearer(&token);
    let a = Some(auth.as_str());

    let (_, v, _) = fm(s, Method::GET, &format!("{DB}/layouts"), a, None).await;
    let names: Vec<&str> = v["response"]["layouts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["contacts", "phones", "contact_names"]);
    let (_, v, _) = fm(s, Method::GET, &format!("{DB}/layouts/contacts"), a, None).await;
    let meta = &v["response"];
    let kind = meta["fieldMetaData"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["name"] == "kind")
        .unwrap();
    assert_eq!(kind["valueList"], "kinds");
    assert_eq!(kind["displayType"], "popupList");
    assert_eq!(meta["valueLists"][0]["values"][1]["value"], "work");
    assert_eq!(
        meta["portalMetaData"]["phones"][0]["name"],
        "phones::number"
    );

    // Create, with portal rows; serials and auto-enter values fill in.
    let people = [
        ("Ada", "Lovelace", "ada@example.test", 36, "12/10/1815"),
        ("Alan", "Turing", "alan@example.test", 41, "06/23/1912"),
        ("Grace", "Hopper", "grace@example.test", 85, "12/09/1906"),
        ("John", "Smith", "john@example.test", 30, "01/01/1990"),
        ("Jane", "Smith", "jane@example.test", 28, "02/02/1992"),
        ("Joan", "Smithers", "joan@example.test", 55, "03/03/1969"),
        ("O'Brien", "D'Arcy", "obrien@example.test", 44, "04/04/1980"),
    ];
    let mut ids = Vec::new();
    for (first, last, email, age, born) in people {
        let (status, v, _) = fm(s, Method::POST, &format!("{DB}/layouts/contacts/records"), a, Some(json!({
            "fieldData": { "first_name": first, "last_name": last, "email": email, "age": age, "born": born, "kind": "work" },
            "portalData": { "phones": [ { "phones::number": format!("+1 555 {age:04}"), "phones::kind": "mobile" } ] }
        }))).await;
        assert_eq!(status, 200, "{v}");
        assert_eq!(v["response"]["modId"], "0");
        ids.push(v["response"]["recordId"].as_str().unwrap().to_owned());
    }
    let (_, v, _) = fm(
        s,
        Method::GET,
        &format!("{DB}/layouts/contacts/records/{}", ids[0]),
        a,
        None,
    )
    .await;
    let rec = &v["response"]["data"][0];
    assert_eq!(rec["fieldData"]["first_name"], "Ada");
    assert_eq!(rec["fieldData"]["id"], 1);
    assert_eq!(rec["fieldData"]["born"], "12/10/1815");
    assert_eq!(rec["fieldData"]["created_by"], "admin");
    assert_eq!(rec["fieldData"]["photo"], "");
    assert_eq!(
        rec["portalData"]["phones"][0]["phones::number"],
        "+1 555 0036"
    );
    assert_eq!(rec["portalDataInfo"][0]["foundCount"], 1);
    assert_eq!(v["response"]["dataInfo"]["totalRecordCount"], 7);
    // ISO dates on request.
    let (_, v, _) = fm(
        s,
        Method::GET,
        &format!("{DB}/layouts/contacts/records/{}?dateformats=2", ids[0]),
        a,
        None,
    )
    .await;
    assert_eq!(v["response"]["data"][0]["fieldData"]["born"], "1815-12-10");

    // Range: sort, offset, limit, dataInfo.
    let sort = urlencode(r#"[{"fieldName":"age","sortOrder":"descend"}]"#);
    let (_, v, _) = fm(
        s,
        Method::GET,
        &format!("{DB}/layouts/contacts/records?_offset=2&_limit=3&_sort={sort}"),
        a,
        None,
    )
    .await;
    let ages: Vec<i64> = v["response"]["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["fieldData"]["age"].as_i64().unwrap())
        .collect();
    assert_eq!(ages, [55, 44, 41]);
    assert_eq!(v["response"]["dataInfo"]["foundCount"], 7);
    assert_eq!(v["response"]["dataInfo"]["returnedCount"], 3);
    // layout.response narrows the fields.
    let (_, v, _) = fm(
        s,
        Method::GET,
        &format!("{DB}/layouts/contacts/records?_limit=1&layout.response=contact_names"),
        a,
        None,
    )
    .await;
    assert_eq!(
        v["response"]["data"][0]["fieldData"]
            .as_object()
            .unwrap()
            .len(),
        2
    );

    // Finds: operators, omit, sort.
    let find = |q: Value| async move {
        let (status, v, _) = fm(
            s,
            Method::POST,
            &format!("{DB}/layouts/contacts/_find"),
            a,
            Some(q),
        )
        .await;
        (status, v)
    };
    let firsts = |v: &Value| -> Vec<String> {
        v["response"]["data"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|r| r["fieldData"]["first_name"].as_str().unwrap().to_owned())
                    .collect()
            })
            .unwrap_or_default()
    };
    let (_, v) = find(
        json!({ "query": [{ "last_name": "smith" }], "sort": [{ "fieldName": "first_name" }] }),
    )
    .await;
    assert_eq!(firsts(&v), ["Jane", "Joan", "John"]);
    let (_, v) = find(
        json!({ "query": [{ "last_name": "==Smith" }], "sort": [{ "fieldName": "first_name" }] }),
    )
    .await;
    assert_eq!(firsts(&v), ["Jane", "John"]);
    let (_, v) = find(json!({ "query": [{ "age": "30...41" }], "sort": [{ "fieldName": "age", "sortOrder": "ascend" }] })).await;
    assert_eq!(firsts(&v), ["John", "Ada", "Alan"]);
    let (_, v) =
        find(json!({ "query": [{ "age": ">=55" }], "sort": [{ "fieldName": "age" }] })).await;
    assert_eq!(firsts(&v), ["Joan", "Grace"]);
    let (_, v) = find(json!({ "query": [{ "age": "<30" }] })).await;
    assert_eq!(firsts(&v), ["Jane"]);
    let (_, v) = find(json!({ "query": [{ "born": "<1900-01-01" }] })).await;
    assert_eq!(firsts(&v), ["Ada"]);
    let (_, v) = find(json!({ "query": [{ "first_name": "J*" }, { "first_name": "Jane", "omit": "true" }], "sort": [{ "fieldName": "first_name" }] })).await;
    assert_eq!(firsts(&v), ["Joan", "John"]);
    let (_, v) = find(json!({ "query": [{ "first_name": "Jo@n" }], "sort": [{ "fieldName": "first_name" }], "limit": "1", "offset": "2" })).await;
    assert_eq!(firsts(&v), ["John"]);
    assert_eq!(v["response"]["dataInfo"]["foundCount"], 2);
    let (_, v) = find(json!({ "query": [{ "notes": "=" }], "limit": 100 })).await;
    assert_eq!(v["response"]["dataInfo"]["foundCount"], 7);
    let (_, v) =
        find(json!({ "query": [{ "last_name": "!" }], "sort": [{ "fieldName": "first_name" }] }))
            .await;
    assert_eq!(firsts(&v), ["Jane", "John"]);
    let (_, v) = find(json!({ "query": [{ "first_name": "o'brien" }] })).await;
    assert_eq!(firsts(&v), ["O'Brien"]);
    // No match: HTTP 500 with 401, as FileMaker Server answers.
    let (status, v) = find(json!({ "query": [{ "last_name": "Nobody" }] })).await;
    assert_eq!((status, code(&v)), (500, "401"));
    // SQL and wildcard injection are inert: text is text.
    // The edge's WAF refuses the blatant ones (in FileMaker's envelope,
    // which clients can read); whatever passes it is inert: text is text.
    for evil in [
        "' OR 1=1 --",
        "%",
        "_",
        "x'); DROP TABLE t1; --",
        "[a-z]",
        "\\' or ''='",
    ] {
        let (status, v) = find(json!({ "query": [{ "last_name": evil }] })).await;
        assert!(
            (status, code(&v)) == (500, "401") || (status, code(&v)) == (403, "960"),
            "{evil}: {status} {v}"
        );
    }
    let before_injection = count(s, &token).await;
    assert_eq!(before_injection, 7);
    // Malformed finds.
    let (status, v) = find(json!({ "query": [{ "nope": "x" }] })).await;
    assert_eq!((status, code(&v)), (500, "102"));
    let (_, v) = find(json!({ "query": [] })).await;
    assert_eq!(code(&v), "400");
    let (_, v) = find(json!({ "query": [{ "age": ">abc" }] })).await;
    assert_eq!(code(&v), "508");
    let (_, v) = find(json!({ "query": [{ "age": "1" }], "limit": 0 })).await;
    assert_eq!(code(&v), "960");
    let (_, v, _) = fm(
        s,
        Method::GET,
        &format!("{DB}/layouts/contacts/records?_limit=100000"),
        a,
        None,
    )
    .await;
    assert_eq!(code(&v), "960");
    let (_, v, _) = fm(
        s,
        Method::GET,
        &format!("{DB}/layouts/missing/records"),
        a,
        None,
    )
    .await;
    assert_eq!(code(&v), "105");
    let (_, v, _) = fm(
        s,
        Method::GET,
        &format!("{DB}/layouts/contacts/records/999"),
        a,
        None,
    )
    .await;
    assert_eq!(code(&v), "101");

    // Edit with modId; a stale one is 306 and changes nothing.
    let rec = format!("{DB}/layouts/contacts/records/{}", ids[3]);
    let (_, v, _) = fm(
        s,
        Method::PATCH,
        &rec,
        a,
        Some(json!({ "fieldData": { "notes": "first" }, "modId": "0" })),
    )
    .await;
    assert_eq!(v["response"]["modId"], "1", "{v}");
    let (status, v, _) = fm(
        s,
        Method::PATCH,
        &rec,
        a,
        Some(json!({ "fieldData": { "notes": "stale" }, "modId": 0 })),
    )
    .await;
    assert_eq!((status, code(&v)), (500, "306"));
    let (_, v, _) = fm(s, Method::GET, &rec, a, None).await;
    assert_eq!(v["response"]["data"][0]["fieldData"]["notes"], "first");
    // Portal rows through edit: add one, change one, delete one.
    let phone_id = v["response"]["data"][0]["portalData"]["phones"][0]["recordId"]
        .as_str()
        .unwrap()
        .to_owned();
    let (_, v, _) = fm(
        s,
        Method::PATCH,
        &rec,
        a,
        Some(json!({ "fieldData": {}, "portalData": { "phones": [
        { "recordId": phone_id, "phones::kind": "home" },
        { "phones::number": "+1 555 7777", "phones::kind": "work" }
    ] } })),
    )
    .await;
    assert_eq!(code(&v), "0", "{v}");
    let (_, v, _) = fm(s, Method::GET, &rec, a, None).await;
    let phones = v["response"]["data"][0]["portalData"]["phones"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(phones.len(), 2);
    assert_eq!(phones[0]["phones::kind"], "home");
    let (_, v, _) = fm(
        s,
        Method::PATCH,
        &rec,
        a,
        Some(json!({ "fieldData": { "deleteRelated": format!("phones.{phone_id}") } })),
    )
    .await;
    assert_eq!(code(&v), "0", "{v}");
    let (_, v, _) = fm(
        s,
        Method::GET,
        &format!("{rec}?portal=%5B%22phones%22%5D&_limit.phones=5"),
        a,
        None,
    )
    .await;
    assert_eq!(
        v["response"]["data"][0]["portalData"]["phones"]
            .as_array()
            .unwrap()
            .len(),
        1
    );

    // Bad input changes nothing: each error, and the count stays.
    let before = count(s, &token).await;
    for (body, expected) in [
        (
            json!({ "fieldData": { "first_name": "X", "age": "forty" } }),
            "502",
        ),
        (
            json!({ "fieldData": { "last_name": "no first name" } }),
            "509",
        ),
        (
            json!({ "fieldData": { "first_name": "Dup", "email": "ada@example.test" } }),
            "504",
        ),
        (
            json!({ "fieldData": { "first_name": "X", "kind": "fax" } }),
            "506",
        ),
        (
            json!({ "fieldData": { "first_name": "X".repeat(51) } }),
            "511",
        ),
        (
            json!({ "fieldData": { "first_name": "X", "born": "31/31/2020" } }),
            "500",
        ),
        (
            json!({ "fieldData": { "first_name": "X", "unknown": "1" } }),
            "102",
        ),
        (
            json!({ "fieldData": { "first_name": "X" }, "portalData": { "phones": [ { "phones::number": "" } ] } }),
            "509",
        ),
        (
            json!({ "fieldData": { "first_name": "X" }, "portalData": { "phones": [ { "phones::kind": "fax", "phones::number": "1" } ] } }),
            "506",
        ),
    ] {
        let (status, v, _) = fm(
            s,
            Method::POST,
            &format!("{DB}/layouts/contacts/records"),
            a,
            Some(body.clone()),
        )
        .await;
        assert_eq!((status, code(&v)), (500, expected), "{body}: {v}");
    }
    assert_eq!(count(s, &token).await, before);
    // The portal failure rolled back its parent: no "X" record exists.
    let (_, v) = find(json!({ "query": [{ "first_name": "==X" }] })).await;
    assert_eq!(code(&v), "401");

    // Duplicate and delete. A copy would repeat the unique e-mail: 504.
    let (_, v, _) = fm(
        s,
        Method::POST,
        &format!("{DB}/layouts/contacts/records/{}", ids[1]),
        a,
        Some(json!({})),
    )
    .await;
    assert_eq!(code(&v), "504", "{v}");
    let (_, v, _) = fm(
        s,
        Method::GET,
        &format!("{DB}/layouts/phones/records?_limit=1"),
        a,
        None,
    )
    .await;
    let phone = v["response"]["data"][0]["recordId"]
        .as_str()
        .unwrap()
        .to_owned();
    let (_, v, _) = fm(
        s,
        Method::POST,
        &format!("{DB}/layouts/phones/records/{phone}"),
        a,
        Some(json!({})),
    )
    .await;
    let dup = v["response"]["recordId"].as_str().unwrap().to_owned();
    assert_ne!(dup, phone);
    let (_, v, _) = fm(
        s,
        Method::DELETE,
        &format!("{DB}/layouts/phones/records/{dup}"),
        a,
        None,
    )
    .await;
    assert_eq!(code(&v), "0");
    let (_, v, _) = fm(
        s,
        Method::DELETE,
        &format!("{DB}/layouts/phones/records/{dup}"),
        a,
        None,
    )
    .await;
    assert_eq!(code(&v), "101");

    // Scripts: standalone, attached, unknown.
    let (_, v, _) = fm(
        s,
        Method::GET,
        &format!("{DB}/layouts/contacts/script/count_smiths?script.param=Smith"),
        a,
        None,
    )
    .await;
    assert_eq!(v["response"]["scriptResult"], "2", "{v}");
    assert_eq!(v["response"]["scriptError"], "0");
    let (_, v, _) = fm(
        s,
        Method::GET,
        &format!("{DB}/layouts/contacts/script/nope"),
        a,
        None,
    )
    .await;
    assert_eq!(code(&v), "104");
    let (_, v, _) = fm(s, Method::POST, &format!("{DB}/layouts/contacts/_find"), a, Some(json!({
        "query": [{ "last_name": "Turing" }], "script": "add_note", "script.param": "from a find"
    }))).await;
    assert_eq!(v["response"]["scriptError"], "0", "{v}");
    assert!(
        v["response"]["scriptResult"]
            .as_str()
            .unwrap()
            .starts_with("Scripted "),
        "{v}"
    );
    let (_, v, _) = fm(
        s,
        Method::GET,
        &format!("{DB}/layouts/contacts/records?_limit=1&script=nope"),
        a,
        None,
    )
    .await;
    assert_eq!(v["response"]["scriptError"], "104", "{v}");

    // Globals are per session.
    let (_, v, _) = fm(
        s,
        Method::PATCH,
        &format!("{DB}/globals"),
        a,
        Some(json!({ "globalFields": { "contacts::g_filter": "abc" } })),
    )
    .await;
    assert_eq!(code(&v), "0", "{v}");
    let (_, v, _) = fm(s, Method::GET, &rec, a, None).await;
    assert_eq!(v["response"]["data"][0]["fieldData"]["g_filter"], "abc");

    // Containers: upload (multipart part `upload`), download via the URL.
    let form = reqwest::multipart::Form::new().part(
        "upload",
        reqwest::multipart::Part::bytes(b"\x89PNG fake image bytes".to_vec())
            .file_name("face.png")
            .mime_str("image/png")
            .unwrap(),
    );
    let resp = s
        .client
        .post(s.url(&format!("{rec}/containers/photo/1")))
        .header("authorization", &auth)
        .multipart(form)
        .send()
        .await
        .unwrap();
    let up: Value = resp.json().await.unwrap();
    assert_eq!(code(&up), "0", "{up}");
    let (_, v, _) = fm(s, Method::GET, &rec, a, None).await;
    let url = v["response"]["data"][0]["fieldData"]["photo"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(url.starts_with("https://"), "{url}");
    let got = s.client.get(&url).send().await.unwrap();
    assert_eq!(got.status(), 200);
    assert_eq!(got.headers()["content-type"], "image/png");
    assert_eq!(
        got.bytes().await.unwrap().as_ref(),
        b"\x89PNG fake image bytes"
    );
    let forged = url.replace("sig=", "sig=00");
    assert_eq!(s.client.get(&forged).send().await.unwrap().status(), 404);
    // Uploading into a text field is refused.
    let form = reqwest::multipart::Form::new().part(
        "upload",
        reqwest::multipart::Part::bytes(b"x".to_vec()).file_name("x.txt"),
    );
    let resp = s
        .client
        .post(s.url(&format!("{rec}/containers/notes")))
        .header("authorization", &auth)
        .multipart(form)
        .send()
        .await
        .unwrap();
    let v: Value = resp.json().await.unwrap();
    assert_eq!(code(&v), "102");

    // The limited account: email is absent, writes are refused.
    let lt = login(s, "limited", LIMITED_PASSWORD).await;
    let la = bearer(&lt);
    let (_, v, _) = fm(s, Method::GET, &rec, Some(&la), None).await;
    let fields = v["response"]["data"][0]["fieldData"].as_object().unwrap();
    assert!(
        fields.contains_key("first_name") && !fields.contains_key("email"),
        "{v}"
    );
    let (_, v, _) = fm(
        s,
        Method::PATCH,
        &rec,
        Some(&la),
        Some(json!({ "fieldData": { "notes": "nope" } })),
    )
    .await;
    assert_eq!(code(&v), "200", "{v}");
    let (_, v, _) = fm(
        s,
        Method::POST,
        &format!("{DB}/layouts/contacts/records"),
        Some(&la),
        Some(json!({ "fieldData": { "first_name": "Nope" } })),
    )
    .await;
    assert_eq!(code(&v), "200");
    let (_, v, _) = fm(
        s,
        Method::POST,
        &format!("{DB}/layouts/contacts/_find"),
        Some(&la),
        Some(json!({ "query": [{ "email": "ada*" }] })),
    )
    .await;
    assert_eq!(code(&v), "102");
    let (_, v, _) = fm(
        s,
        Method::GET,
        &format!("{DB}/layouts/contacts"),
        Some(&la),
        None,
    )
    .await;
    assert!(
        !v["response"]["fieldMetaData"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["name"] == "email")
    );

    // Sign-out; the dead token gets 952 (HTTP 401).
    let (_, v, _) = fm(
        s,
        Method::DELETE,
        &format!("{DB}/sessions/{token}"),
        None,
        None,
    )
    .await;
    assert_eq!(code(&v), "0");
    let (status, v, _) = fm(s, Method::GET, &format!("{DB}/layouts"), a, None).await;
    assert_eq!((status, code(&v)), (401, "952"));

    // Closing the app ends sessions and refuses new ones (802).
    let r = call(
        s,
        Method::PATCH,
        &format!("/api/v1/teams/{}/apps/{}", f.team, f.app),
        Some(&f.operator),
        Some(json!({ "status": "closed" })),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let (status, v, _) = fm(s, Method::GET, &format!("{DB}/layouts"), Some(&la), None).await;
    assert_eq!(code(&v), "802", "{status} {v}");
    let (_, v, _) = fm(
        s,
        Method::POST,
        &format!("{DB}/sessions"),
        Some(&basic("admin", ADMIN_PASSWORD)),
        None,
    )
    .await;
    assert_eq!(code(&v), "802");

    // Sign-ins are security events.
    let actions: Vec<String> = super::kura_id_api::logged_actions(&s.events)
        .await
        .iter()
        .map(|e| e.action.as_str().to_owned())
        .collect();
    for expected in [
        "app.signin",
        "app.signin.failed",
        "app.created",
        "app.account.created",
        "app.closed",
        "host.created",
    ] {
        assert!(
            actions.iter().any(|a| a == expected),
            "{expected} missing from {actions:?}"
        );
    }
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schema_changes_never_lose_data_silently_and_apps_are_isolated() {
    let f = fixture().await;
    let s = &f.server;
    let schema_path = format!("/api/v1/teams/{}/apps/{}/schema", f.team, f.app);
    let token = login(s, "admin", ADMIN_PASSWORD).await;
    let (_, v, _) = fm(
        s,
        Method::POST,
        &format!("{DB}/layouts/contacts/records"),
        Some(&bearer(&token)),
        Some(json!({ "fieldData": { "first_name": "Keep", "notes": "precious" } })),
    )
    .await;
    assert_eq!(code(&v), "0", "{v}");

    // Applying the same definition again changes nothing.
    let r = call(
        s,
        Method::PUT,
        &schema_path,
        Some(&f.operator),
        Some(json!({ "definition": contacts_definition() })),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json()["applied"], false);
    let version = r.json()["version"].as_i64().unwrap();

    // Dropping a field that holds data is refused unless allowed.
    let mut def = contacts_definition();
    let fields = def["tables"][0]["fields"].as_array_mut().unwrap();
    fields.retain(|f| f["name"] != "notes");
    let layout_fields = def["layouts"][0]["fields"].as_array_mut().unwrap();
    layout_fields.retain(|f| f != "notes");
    let r = call(
        s,
        Method::PUT,
        &schema_path,
        Some(&f.operator),
        Some(json!({ "definition": def.clone() })),
    )
    .await;
    let p = r.problem(409);
    assert!(
        p["detail"].as_str().unwrap().contains("contacts::notes"),
        "{p}"
    );
    let r = get(s, &schema_path, &f.operator).await;
    assert_eq!(r.json()["version"].as_i64().unwrap(), version);
    // A dry run reports without changing.
    let r = call(
        s,
        Method::PUT,
        &schema_path,
        Some(&f.operator),
        Some(json!({ "definition": def.clone(), "allow_data_loss": true, "dry_run": true })),
    )
    .await;
    assert_eq!(r.json()["applied"], false, "{}", r.text);
    assert!(
        r.json()["changes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c.as_str().unwrap().contains("drop field"))
    );
    // Renaming keeps values.
    let mut renamed = contacts_definition();
    renamed["tables"][0]["fields"][6] =
        json!({ "name": "remarks", "type": "text", "renamed_from": "notes" });
    let lf = renamed["layouts"][0]["fields"].as_array_mut().unwrap();
    for f in lf.iter_mut() {
        if f == "notes" {
            *f = json!("remarks");
        }
    }
    let r = call(
        s,
        Method::PUT,
        &schema_path,
        Some(&f.operator),
        Some(json!({ "definition": renamed })),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json()["applied"], true);
    let (_, v, _) = fm(
        s,
        Method::POST,
        &format!("{DB}/layouts/contacts/_find"),
        Some(&bearer(&token)),
        Some(json!({ "query": [{ "remarks": "precious" }] })),
    )
    .await;
    assert_eq!(
        v["response"]["data"][0]["fieldData"]["remarks"], "precious",
        "{v}"
    );

    // Invalid definitions name the path and change nothing.
    let r = call(s, Method::PUT, &schema_path, Some(&f.operator), Some(json!({ "definition": { "tables": [ { "name": "t", "fields": [ { "name": "a", "type": "blob" } ] } ] } }))).await;
    assert_eq!(r.status, 422, "{}", r.text);
    let r = call(
        s,
        Method::PUT,
        &schema_path,
        Some(&f.operator),
        Some(json!({ "definition": { "layouts": [ { "name": "l", "table": "missing" } ] } })),
    )
    .await;
    let p = r.problem(422);
    assert!(
        p["detail"].as_str().unwrap().contains("layouts[0].table"),
        "{p}"
    );

    // An index on several fields is declared in the definition; one that
    // names a field the table lacks is refused with its path.
    let r = get(s, &schema_path, &f.operator).await;
    let version = r.json()["version"].as_i64().unwrap();
    let mut indexed = r.json()["definition"].clone();
    indexed["tables"][0]["indexes"] = json!([["last_name", "first_name"]]);
    let mut bad = indexed.clone();
    bad["tables"][0]["indexes"] = json!([["last_name", "nickname"]]);
    let r = call(
        s,
        Method::PUT,
        &schema_path,
        Some(&f.operator),
        Some(json!({ "definition": bad })),
    )
    .await;
    let p = r.problem(422);
    let detail = p["detail"].as_str().unwrap();
    assert!(
        detail.contains("tables[0].indexes[0]") && detail.contains("nickname"),
        "{p}"
    );
    let r = get(s, &schema_path, &f.operator).await;
    assert_eq!(r.json()["version"].as_i64().unwrap(), version);
    let r = call(
        s,
        Method::PUT,
        &schema_path,
        Some(&f.operator),
        Some(json!({ "definition": indexed })),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(
        r.json()["changes"],
        json!(["index `contacts` on (last_name, first_name)"])
    );

    // Another team's owner sees none of this team's hosts or apps.
    let r = post(
        s,
        "/api/v1/teams",
        Some(&f.operator),
        json!({ "name": "Beta", "owner_email": "owner@beta.test" }),
    )
    .await;
    let beta = r.json()["id"].as_str().unwrap().to_owned();
    let r = get(
        s,
        &format!("/api/v1/teams/{beta}/apps/{}", f.app),
        &f.operator,
    )
    .await;
    r.problem(404);
    let r = get(s, &format!("/api/v1/teams/{beta}/hosts"), &f.operator).await;
    assert_eq!(r.json().as_array().unwrap().len(), 0);
    // Host names are platform-wide (they are in URLs).
    let r = post(
        s,
        &format!("/api/v1/teams/{beta}/hosts"),
        Some(&f.operator),
        json!({ "name": "acme" }),
    )
    .await;
    r.problem(409);
    let r = post(
        s,
        &format!("/api/v1/teams/{beta}/hosts"),
        Some(&f.operator),
        json!({ "name": "Bad Name" }),
    )
    .await;
    r.problem(422);

    // A renamed app answers under its new name only (resolved names are
    // cached, and a rename forgets them).
    let app_path = format!("/api/v1/teams/{}/apps/{}", f.team, f.app);
    let renamed_db = "/hosts/acme/fmi/data/vLatest/databases/Renamed";
    let r = call(
        s,
        Method::PATCH,
        &app_path,
        Some(&f.operator),
        Some(json!({ "name": "Renamed" })),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let (_, v, _) = fm(
        s,
        Method::POST,
        &format!("{DB}/sessions"),
        Some(&basic("admin", ADMIN_PASSWORD)),
        None,
    )
    .await;
    assert_eq!(code(&v), "802", "{v}");
    let (status, v, _) = fm(
        s,
        Method::POST,
        &format!("{renamed_db}/sessions"),
        Some(&basic("admin", ADMIN_PASSWORD)),
        None,
    )
    .await;
    assert_eq!((status, code(&v)), (200, "0"), "{v}");
    let r = call(
        s,
        Method::PATCH,
        &app_path,
        Some(&f.operator),
        Some(json!({ "name": "Contacts" })),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);

    // Deleting the app needs its name, then destroys its data key.
    let r = call(
        s,
        Method::DELETE,
        &format!("{app_path}?confirm=contacts"),
        Some(&f.operator),
        None,
    )
    .await;
    r.problem(422);
    let r = call(
        s,
        Method::DELETE,
        &format!("{app_path}?confirm=Contacts"),
        Some(&f.operator),
        None,
    )
    .await;
    assert_eq!(r.status, 204, "{}", r.text);
    let file = s.data_dir().join("apps").join(format!("{}.db", f.app));
    assert!(!file.exists());
    let (_, v, _) = fm(
        s,
        Method::GET,
        &format!("{DB}/layouts"),
        Some(&bearer(&token)),
        None,
    )
    .await;
    assert_eq!(code(&v), "802");
    let _: Reply = get(s, "/api/v1/me", &f.operator).await;
}

/// The fixture for the client peers: the same app, with an `Echo` script
/// and without the validation rules the clients' own record shapes do not
/// follow (their records repeat e-mails and may leave names empty).
fn peer_definition() -> Value {
    let mut def = contacts_definition();
    for field in def["tables"][0]["fields"].as_array_mut().unwrap() {
        field.as_object_mut().unwrap().remove("unique");
        field.as_object_mut().unwrap().remove("required");
        field.as_object_mut().unwrap().remove("max_length");
    }
    def["tables"][0]["fields"][0]["unique"] = json!(false);
    def["scripts"]
        .as_array_mut()
        .unwrap()
        .push(json!({ "name": "Echo", "steps": [ { "exit_script": "{{param}}" } ] }));
    def
}

/// Runs one peer client script against the fixture; fails with its output.
fn run_peer(program: &str, args: &[&str], f: &Fixture, ca: &std::path::Path) {
    let url = f.server.url("/hosts/acme");
    let out = std::process::Command::new(program)
        .args(args)
        .env("KURA_FM_URL", url.trim_end_matches('/'))
        .env("KURA_FM_CA", ca)
        .env("KURA_FM_DB", "Contacts")
        .env("KURA_FM_USER", "admin")
        .env("KURA_FM_PASSWORD", ADMIN_PASSWORD)
        .env("KURA_FM_LIMITED_USER", "limited")
        .env("KURA_FM_LIMITED_PASSWORD", LIMITED_PASSWORD)
        .env("KURA_FM_SCRIPT", "Echo")
        .output()
        .unwrap_or_else(|e| {
            panic!("{program} could not run ({e}); `cargo xtask test` installs it")
        });
    // Shown with --no-capture: one line per client check.
    eprintln!("{}", String::from_utf8_lossy(&out.stdout));
    assert!(
        out.status.success(),
        "{program} {args:?} failed\n--- stdout\n{}\n--- stderr\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unmodified_python_fmrest_and_fmdapi_clients_work() {
    let f = fixture().await;
    let schema_path = format!("/api/v1/teams/{}/apps/{}/schema", f.team, f.app);
    let r = call(
        &f.server,
        Method::PUT,
        &schema_path,
        Some(&f.operator),
        Some(json!({ "definition": peer_definition() })),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("kura-ca.pem");
    std::fs::write(&ca, f.server.certificate_pem()).unwrap();
    let peers = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/peers");
    let python = kura_testkit::pyotp_python();
    let script = peers.join("fmrest_e2e.py");
    let node_script = peers.join("fmdapi/e2e.mjs");
    let (f2, ca2) = (&f, ca.clone());
    tokio::task::block_in_place(|| {
        run_peer(&python, &[script.to_str().unwrap()], f2, &ca2);
        run_peer("node", &[node_script.to_str().unwrap()], f2, &ca2);
    });
}
