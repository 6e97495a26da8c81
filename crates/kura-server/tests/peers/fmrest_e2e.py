"""End-to-end check of Kura's FileMaker Data API with the unmodified PyPI client python-fmrest.

Run with the virtualenv that `cargo xtask test` fills (python-fmrest pinned there):

    ~/.cache/kura-venv/bin/python crates/kura-server/tests/peers/fmrest_e2e.py

Target, from the environment:
    KURA_FM_URL               https://127.0.0.1:PORT (no trailing slash)
    KURA_FM_CA                PEM file of the CA that signed the server certificate
    KURA_FM_DB                database name (default: Contacts)
    KURA_FM_USER / KURA_FM_PASSWORD                  app account with full access
    KURA_FM_LIMITED_USER / KURA_FM_LIMITED_PASSWORD  app account with the limited set
    KURA_FM_SCRIPT            script that returns its parameter (default: Echo)
    KURA_FM_API_VERSION       v1, v2 or vLatest (default: vLatest)

Fixture app the server must host (created before this runs):
    database `Contacts`
      table/layout `contacts` with fields
        id          number, auto-enter serial
        first_name  text
        last_name   text
        email       text
        age         number
        born        date
        notes       text
        photo       container
        created_at  timestamp, auto-enter creation timestamp
      and a portal `phones` showing related `phones` records (phones::number, phones::kind);
        phones::kind uses the value list `kinds`
      table/layout `phones` with fields number (text), kind (text) and the key that relates it
        to contacts (the relationship creates the related record on portal writes)
      value list `kinds` (custom: home, work, mobile)
      script `Echo`: returns its script parameter as the script result
    accounts
      admin    full access
      limited  privilege set that may view `contacts` records but not edit them, and has no
               access to the field `email`

Every check prints one line; the first failure prints the server's last response and exits 1.
The records this run creates carry a random tag in last_name, and are deleted at the end, so
runs do not disturb each other.
"""

import io
import json
import os
import re
import secrets
import sys

import fmrest
import fmrest.server
from fmrest.exceptions import FileMakerError

# Observe (not alter) every HTTP exchange the client makes, so a failure can show the server's
# answer. python-fmrest calls `request` through its server module's namespace.
_LAST = {"response": None}
_client_request = fmrest.server.request


def _observed_request(*args, **kwargs):
    response = _client_request(*args, **kwargs)
    _LAST["response"] = response
    return response


fmrest.server.request = _observed_request

PASSED = []


def last_response_text():
    response = _LAST["response"]
    if response is None:
        return "(no response yet)"
    body = response.text if response.headers.get("Content-Type", "").startswith(
        "application/json") else f"<{len(response.content)} bytes>"
    return f"{response.request.method} {response.url} -> HTTP {response.status_code}: {body[:2000]}"


def fail(name, detail):
    print(f"FAIL {name}: {detail}")
    print(f"     last server response: {last_response_text()}")
    sys.exit(1)


def check(name, condition, detail=""):
    if not condition:
        fail(name, detail or "condition false")
    PASSED.append(name)
    print(f"ok   {name}")


def last_json():
    response = _LAST["response"]
    try:
        return response.json()
    except ValueError:
        fail("response is JSON", "body is not JSON")
    return None


def expect_fm_error(name, code, call):
    """Runs `call`, which must raise FileMakerError with `code`."""
    try:
        call()
    except FileMakerError as e:
        got = e.args[0] if e.args else ""
        check(name, f"error {code}," in got, f"expected FileMaker error {code}, got: {got}")
        return
    fail(name, f"expected FileMaker error {code}, the call succeeded")


def env(name, default=None):
    value = os.environ.get(name, default)
    if value is None:
        print(f"FAIL environment: {name} is not set")
        sys.exit(2)
    return value


URL = env("KURA_FM_URL").rstrip("/")
CA = env("KURA_FM_CA")
DB = env("KURA_FM_DB", "Contacts")
USER = env("KURA_FM_USER")
PASSWORD = env("KURA_FM_PASSWORD")
LIMITED_USER = env("KURA_FM_LIMITED_USER")
LIMITED_PASSWORD = env("KURA_FM_LIMITED_PASSWORD")
SCRIPT = env("KURA_FM_SCRIPT", "Echo")
VERSION = env("KURA_FM_API_VERSION", "vLatest")
# FileMaker's codes when a privilege set forbids an edit: 200 "Record access is denied" for the
# record, 201 "Field cannot be modified" for a field.
DENIED_EDIT_CODES = ("200", "201")


def server(user=USER, password=PASSWORD, version=VERSION, **kwargs):
    return fmrest.Server(URL, user=user, password=password, database=DB, layout="contacts",
                         api_version=version, verify_ssl=CA, **kwargs)


def layout_names(entries):
    names = []
    for entry in entries or []:
        if entry.get("isFolder"):
            names += layout_names(entry.get("folderLayoutNames", []))
        else:
            names.append(entry.get("name"))
    return names


def main():
    tag = "Zq" + secrets.token_hex(5)

    # --- Anonymous metadata and sign-in ---------------------------------------------------------
    fms = server()
    info = fms.get_product_info()
    check("productInfo without a session", isinstance(info, dict) and "name" in info, repr(info))
    databases = fms.get_databases()
    check("databases lists the app", DB in [d.get("name") for d in databases or []], repr(databases))

    expect_fm_error("login with a wrong password is 212", 212,
                    lambda: server(password=PASSWORD + "x").login())
    check("bad login is HTTP 401", _LAST["response"].status_code == 401)

    token = fms.login()
    check("login returns a token in response.token", bool(token))
    header = _LAST["response"].headers.get("X-FM-Data-Access-Token")
    check("login also returns X-FM-Data-Access-Token", header == token, f"header {header!r}")
    check("messages[0].code is the string \"0\"",
          last_json()["messages"][0]["code"] == "0", repr(last_json()))

    # --- Metadata -------------------------------------------------------------------------------
    names = layout_names(fms.get_layouts())
    check("layouts lists contacts and phones", {"contacts", "phones"} <= set(names), repr(names))

    meta = fms.get_layout(metadata="all")
    fields = {f["name"]: f for f in meta.get("fieldMetaData", [])}
    wanted = {"id", "first_name", "last_name", "email", "age", "born", "notes", "photo",
              "created_at"}
    check("layout metadata lists the fields", wanted <= set(fields), repr(sorted(fields)))
    check("metadata field types", fields["age"].get("result") == "number"
          and fields["born"].get("result") == "date"
          and fields["photo"].get("result") == "container"
          and fields["created_at"].get("result") == "timeStamp",
          repr({k: fields[k].get("result") for k in wanted}))
    check("metadata auto-enter on id", fields["id"].get("autoEnter") is True, repr(fields["id"]))
    portal_meta = meta.get("portalMetaData", {})
    check("metadata lists the phones portal", "phones" in portal_meta, repr(portal_meta))
    lists = {v["name"]: [x.get("value") for x in v.get("values", [])]
             for v in meta.get("valueLists", [])}
    check("metadata carries the value list kinds",
          set(lists.get("kinds", [])) >= {"home", "work", "mobile"}, repr(lists))

    scripts = layout_names(fms.get_scripts())
    check("scripts lists the echo script", SCRIPT in scripts, repr(scripts))

    # --- Create ---------------------------------------------------------------------------------
    people = [
        ("Ada", 20, "ada@example.test", "01/15/2000", f"first {tag}"),
        ("Bob", 30, "bob@example.test", "02/20/1990", f"dup {tag}"),
        ("Cy", 40, "cy@example.test", "03/25/1980", f"dup {tag}"),
        ("Dee", 50, "dee@example.test", "04/30/1970", f"fourth {tag}"),
        ("Eve", 60, "eve@example.test", "05/05/1960", f"fifth {tag}"),
        ("Fay", 70, "", "06/10/1950", f"sixth {tag}"),
    ]
    ids = {}
    for first, age, email, born, notes in people:
        portals = None
        if first == "Ada":
            portals = {"phones": [{"phones::number": "555-0101", "phones::kind": "home"},
                                  {"phones::number": "555-0102", "phones::kind": "work"}]}
        record_id = fms.create_record({"first_name": first, "last_name": tag, "email": email,
                                       "age": age, "born": born, "notes": notes},
                                      portals=portals)
        raw = last_json()["response"]
        check(f"create {first}", isinstance(record_id, int) and record_id > 0
              and isinstance(raw.get("recordId"), str) and raw.get("modId") == "0", repr(raw))
        ids[first] = record_id

    # --- Read -----------------------------------------------------------------------------------
    ada = fms.get_record(ids["Ada"])
    raw = last_json()["response"]
    check("get one: recordId and modId are strings",
          isinstance(raw["data"][0]["recordId"], str) and isinstance(raw["data"][0]["modId"], str),
          repr(raw["data"][0]))
    info = raw.get("dataInfo", {})
    check("get one: dataInfo counts are numbers",
          all(isinstance(info.get(k), int) for k in ("totalRecordCount", "foundCount",
                                                      "returnedCount")), repr(info))
    check("get one: field values", ada.first_name == "Ada" and ada.last_name == tag
          and ada.email == "ada@example.test" and float(ada.age) == 20
          and ada.born == "01/15/2000", repr(raw["data"][0]["fieldData"]))
    check("get one: serial id set", str(ada.id).strip() != "", repr(ada.id))
    check("get one: creation timestamp set",
          re.fullmatch(r"\d{2}/\d{2}/\d{4} \d{2}:\d{2}:\d{2}", str(ada.created_at)) is not None,
          repr(ada.created_at))
    phones = list(ada.portal_phones)
    check("get one: portal rows", sorted(p["phones::number"] for p in phones)
          == ["555-0101", "555-0102"], repr(raw["data"][0].get("portalData")))
    check("get one: portal rows have recordId", all(p["recordId"] for p in phones))

    serials = [float(fms.get_record(ids[p[0]]).id) for p in people]
    check("serial ids increase in creation order", serials == sorted(set(serials)), repr(serials))

    limited_portal = fms.get_record(ids["Ada"], portals=[{"name": "phones", "offset": 2,
                                                          "limit": 1}])
    rows = list(limited_portal.portal_phones)
    check("get one: portal offset/limit", len(rows) == 1, repr(last_json()["response"]))

    # --- Edit and modId -------------------------------------------------------------------------
    check("edit without modId", fms.edit_record(ids["Bob"], {"notes": f"dup {tag}",
                                                             "email": "bob2@example.test"}))
    bob = fms.get_record(ids["Bob"])
    current = bob.modification_id
    check("edit bumps modId", current >= 1 and bob.email == "bob2@example.test",
          repr(last_json()["response"]["data"][0]))
    check("edit with the current modId",
          fms.edit_record(ids["Bob"], {"email": "bob3@example.test"}, mod_id=current))
    new_mod = last_json()["response"].get("modId")
    check("edit answers the new modId as a string",
          isinstance(new_mod, str) and int(new_mod) > current, repr(new_mod))
    expect_fm_error("edit with a stale modId is 306", 306,
                    lambda: fms.edit_record(ids["Bob"], {"email": "stale@example.test"},
                                            mod_id=current))
    check("stale edit is HTTP 500", _LAST["response"].status_code == 500)
    check("stale edit changed nothing", fms.get_record(ids["Bob"]).email == "bob3@example.test",
          repr(last_json()["response"]["data"][0]["fieldData"]))

    ada_phone = sorted(phones, key=lambda p: p["phones::number"])[0]
    check("edit portal rows", fms.edit_record(ids["Ada"], {}, portals={"phones": [
        {"recordId": str(ada_phone["recordId"]), "phones::kind": "mobile"},
        {"phones::number": "555-0103", "phones::kind": "work"}]}))
    rows = {p["phones::number"]: p["phones::kind"] for p in fms.get_record(ids["Ada"]).portal_phones}
    check("portal edit and portal create applied",
          rows == {"555-0101": "mobile", "555-0102": "work", "555-0103": "work"}, repr(rows))

    # --- Find -----------------------------------------------------------------------------------
    def found(query, **kwargs):
        return [r.first_name for r in fms.find(query, **kwargs)]

    def mine(**criteria):
        return dict(criteria, last_name=f"=={tag}")

    check("find == exact", found([mine(first_name="==Bob")]) == ["Bob"])
    check("find ... range", sorted(found([mine(age="30...50")])) == ["Bob", "Cy", "Dee"],
          repr(last_json()))
    check("find <", sorted(found([mine(age="<40")])) == ["Ada", "Bob"])
    check("find >=", sorted(found([mine(age=">=50")])) == ["Dee", "Eve", "Fay"])
    check("find * wildcard", found([mine(first_name="D*")]) == ["Dee"])
    check("find * alone is not empty", sorted(found([mine(email="*")]))
          == ["Ada", "Bob", "Cy", "Dee", "Eve"])
    check("find = alone is empty", found([mine(email="=")]) == ["Fay"])
    check("find @ one character", found([mine(first_name="C@")]) == ["Cy"])
    check("find ! duplicates", sorted(found([mine(notes="!")])) == ["Bob", "Cy"], repr(last_json()))
    check("find OR of requests", sorted(found([mine(first_name="==Ada"), mine(first_name="==Eve")]))
          == ["Ada", "Eve"])
    check("find with omit", sorted(found([mine(), {"age": ">=60", "omit": "true"}]))
          == ["Ada", "Bob", "Cy", "Dee"])
    check("find sort descend", found([mine()], sort=[{"fieldName": "age", "sortOrder": "descend"}])
          == ["Fay", "Eve", "Dee", "Cy", "Bob", "Ada"])
    page = fms.find([mine()], sort=[{"fieldName": "age", "sortOrder": "ascend"}], offset=3, limit=2)
    check("find offset/limit", [r.first_name for r in page] == ["Cy", "Dee"], repr(last_json()))
    info = page.info
    check("find dataInfo counts", info.get("foundCount") == 6 and info.get("returnedCount") == 2,
          repr(info))
    with_portal = fms.find([mine(first_name="==Ada")],
                           portals=[{"name": "phones", "offset": 1, "limit": 1}])
    check("find with a portal limit", len(list(with_portal[0].portal_phones)) == 1,
          repr(last_json()))
    expect_fm_error("find with no match is 401", 401,
                    lambda: fms.find([mine(first_name="==Nobody")]))
    check("no match is HTTP 500", _LAST["response"].status_code == 500)
    expect_fm_error("find on an unknown field is 102", 102,
                    lambda: fms.find([{"no_such_field": "x"}]))

    # --- Range ----------------------------------------------------------------------------------
    rng = fms.get_records(offset=1, limit=3, sort=[{"fieldName": "id", "sortOrder": "descend"}])
    got = [float(r.id) for r in rng]
    check("range sorted and limited", len(got) == 3 and got == sorted(got, reverse=True)
          and got[0] == serials[-1], repr(got))
    check("range dataInfo", rng.info.get("returnedCount") == 3
          and rng.info.get("totalRecordCount", 0) >= 6, repr(rng.info))

    # --- Containers -----------------------------------------------------------------------------
    payload = b"\x89PNG\r\n\x1a\n" + secrets.token_bytes(300)
    check("container upload", fms.upload_container(ids["Cy"], "photo", io.BytesIO(payload)))
    url = fms.get_record(ids["Cy"]).photo
    check("container field holds a URL", isinstance(url, str) and url.startswith("https://"),
          repr(url))
    _, _, _, download = fms.fetch_file(url)
    check("container download returns the bytes", download.status_code == 200
          and download.content == payload, f"HTTP {download.status_code}, "
          f"{len(download.content)} bytes")

    # --- Scripts --------------------------------------------------------------------------------
    error, result = fms.perform_script(SCRIPT, param=f"hello {tag}")
    check("script with a parameter", error == 0 and result == f"hello {tag}",
          repr((error, result)))
    fms.find([mine(first_name="==Ada")], scripts={"after": [SCRIPT, "after find"]})
    check("script after a find", fms.last_script_result.get("after") == [0, "after find"],
          repr(fms.last_script_result))
    expect_fm_error("unknown script is 104", 104,
                    lambda: fms.perform_script("No such script " + tag))

    # --- Restricted privilege set ---------------------------------------------------------------
    limited = server(user=LIMITED_USER, password=LIMITED_PASSWORD)
    limited.login()
    seen = limited.get_record(ids["Ada"])
    field_data = last_json()["response"]["data"][0]["fieldData"]
    check("limited: email absent from fieldData", "email" not in field_data
          and field_data.get("first_name") == "Ada", repr(field_data))
    found_limited = limited.find([mine()])
    check("limited: email absent from find results",
          all("email" not in r.keys() for r in found_limited))
    try:
        limited.edit_record(ids["Ada"], {"first_name": "Mallory"})
        fail("limited: edit refused", "the edit succeeded")
    except FileMakerError:
        code = str(limited.last_error)
        check("limited: edit refused", code in DENIED_EDIT_CODES,
              f"code {code}, expected one of {DENIED_EDIT_CODES}")
    check("limited: refused edit changed nothing",
          fms.get_record(ids["Ada"]).first_name == "Ada")
    check("limited: logout", limited.logout())
    del seen

    # --- Other API versions ---------------------------------------------------------------------
    for version in ("v1", "v2", "vLatest"):
        other = server(version=version)
        other.login()
        check(f"{version}: layouts", "contacts" in layout_names(other.get_layouts()))
        check(f"{version}: logout", other.logout())

    # --- Delete ---------------------------------------------------------------------------------
    for first, record_id in ids.items():
        check(f"delete {first}", fms.delete_record(record_id))
    expect_fm_error("get a deleted record is 101", 101, lambda: fms.get_record(ids["Ada"]))

    # --- Log out and the dead token -------------------------------------------------------------
    check("logout", fms.logout())
    fms._token = token  # the client forgets its token on logout; send the old one again
    expect_fm_error("dead token is 952", 952, fms.get_layouts)
    check("dead token is HTTP 401", _LAST["response"].status_code == 401)
    fms._token = None
    relogin = server(auto_relogin=True)
    relogin.login()
    old = relogin._token
    relogin.logout()
    relogin._token = old
    check("auto_relogin recovers from 952", "contacts" in layout_names(relogin.get_layouts())
          and relogin._token != old)
    relogin.logout()

    print(f"fmrest e2e: {len(PASSED)} checks passed ({json.dumps(fmrest.__version__)})")


if __name__ == "__main__":
    try:
        main()
    except FileMakerError as e:
        fail("unexpected FileMaker error", str(e))
    except Exception as e:  # any other client error is a failed check with the server's answer
        fail("unexpected client error", f"{type(e).__name__}: {e}")
