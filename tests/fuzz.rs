//! Fuzzing every input a client or a peer controls: methods, paths, query
//! strings, credentials, content types and bodies (random bytes, random
//! JSON, valid bodies with one field broken, oversized bodies), against a
//! real node. Whatever arrives:
//!
//! - the node answers, and stays up (no panic, no dropped connection);
//! - the answer is never a 5xx;
//! - a refusal (4xx, or `success: false` from `/api/v1/command`) changes
//!   nothing: the rooms, their offsets and the watched KV keys are as they
//!   were.
//!
//! The cases come from a fixed seed: every run sends the same requests, and
//! a failure names the request that caused it. Subscriptions (WebSocket,
//! SSE) are long-lived and have their own tests; their query strings share
//! the parsers fuzzed here.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use common::*;
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::TestRunner;
use reqwest::Method;
use serde_json::{json, Value};

const ADMIN: &str = "fuzz-admin";
const SCOPED: &str = "fuzz-scoped";
const SECRET: &str = "fuzz-secret";
const CASES: usize = 1_500;
/// Bodies above the request limit (4 MiB), which a node may cut off.
const OVERSIZED: usize = 4 << 20;

/// Rooms and KV keys the seeded state holds and the fuzzer aims at.
const ROOMS: [&str; 3] = ["orders", "tenant.a", "audit"];
const KEYS: [&str; 2] = ["config:theme", "tenant.a.flag"];

#[derive(Debug, Clone)]
enum Credential {
    None,
    Admin,
    Scoped,
    Wrong,
    Malformed(&'static [u8]),
    InQuery(&'static str),
}

/// One request the fuzzer sends.
#[derive(Debug, Clone)]
struct Probe {
    method: Method,
    path: String,
    query: Vec<(String, String)>,
    credential: Credential,
    secret: bool,
    content_type: Option<&'static str>,
    body: Vec<u8>,
}

fn segment() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => prop::sample::select(ROOMS.iter().chain(KEYS.iter()).map(|s| s.to_string()).collect::<Vec<_>>()),
        2 => "[a-z0-9._:*>-]{1,16}",
        1 => Just(String::new()),
        1 => Just("..".to_owned()),
        1 => prop::sample::select(vec!["%00", "%FF%FE", "a%2Fb", "%2e%2e", "%", "%zz", "+", "a b", "é", "🦀"])
            .prop_map(str::to_owned),
        1 => "[0-9]{1,25}",
        1 => Just("-1".to_owned()),
        1 => Just("x".repeat(300)),
        1 => Just("y".repeat(5_000)),
        1 => "\\PC{1,12}",
    ]
}

/// A route of the API (or none) and its method, placeholders filled.
fn route() -> impl Strategy<Value = (Method, String)> {
    let templates = vec![
        (Method::POST, "/stream/{}"),
        (Method::PUT, "/stream/{}"),
        (Method::DELETE, "/stream/{}"),
        (Method::POST, "/stream/{}/publish"),
        (Method::POST, "/stream/{}/publish"),
        (Method::POST, "/stream/{}/batch"),
        (Method::POST, "/stream/{}/batch"),
        (Method::GET, "/stream/{}/history"),
        (Method::GET, "/stream/{}/stats"),
        (Method::GET, "/stream/{}/consume/{}"),
        (Method::GET, "/stream/list"),
        (Method::POST, "/api/v1/command"),
        (Method::POST, "/api/v1/command"),
        (Method::POST, "/api/v1/command"),
        (Method::POST, "/kv/set"),
        (Method::POST, "/kv/set"),
        (Method::GET, "/kv/get/{}"),
        (Method::GET, "/kv/exists/{}"),
        (Method::DELETE, "/kv/del/{}"),
        (Method::GET, "/admin/cluster"),
        (Method::POST, "/admin/cluster/init"),
        (Method::POST, "/admin/cluster/learners"),
        (Method::POST, "/admin/cluster/voters"),
        (Method::DELETE, "/admin/cluster/members/{}"),
        (Method::GET, "/health"),
        (Method::GET, "/ready"),
        (Method::GET, "/metrics"),
        (Method::POST, "/raft/append"),
        (Method::POST, "/raft/vote"),
        (Method::POST, "/raft/snapshot"),
        (Method::POST, "/raft/forward"),
        (Method::POST, "/raft/read-index"),
        (Method::POST, "/raft/identity"),
        (Method::GET, "/{}"),
        (Method::POST, "/{}/{}/{}"),
    ];
    let other_method = prop::sample::select(vec![
        Method::GET,
        Method::POST,
        Method::PUT,
        Method::DELETE,
        Method::PATCH,
        Method::HEAD,
        Method::OPTIONS,
    ]);
    (prop::sample::select(templates), prop::option::weighted(0.15, other_method), segment(), segment()).prop_map(
        |((method, template), other_method, a, b)| {
            let mut segments = [a, b].into_iter();
            let mut path = String::new();
            for (i, part) in template.split("{}").enumerate() {
                if i > 0 {
                    path.push_str(&segments.next().unwrap_or_default());
                }
                path.push_str(part);
            }
            (other_method.unwrap_or(method), path)
        },
    )
}

fn query() -> impl Strategy<Value = Vec<(String, String)>> {
    let key = prop_oneof![
        prop::sample::select(vec![
            "from",
            "from_offset",
            "limit",
            "types",
            "consistency",
            "subscriber_id",
            "api_key",
            "timeout",
        ])
        .prop_map(str::to_owned),
        "[a-z_]{1,8}",
    ];
    let value = prop_oneof![
        prop::sample::select(vec![
            "-1",
            "0",
            "1",
            "-9223372036854775808",
            "18446744073709551616",
            "1e3",
            "abc",
            "",
            "%ff",
            "*",
            "a.*,b",
            ",,,",
            "linearizable",
            "local",
            "stale",
        ])
        .prop_map(str::to_owned),
        "\\PC{0,20}",
        Just("z".repeat(3_000)),
    ];
    prop::collection::vec((key, value), 0..4)
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_filter("JSON has no NaN or infinities", |f| f.is_finite()).prop_map(Value::from),
        "\\PC{0,16}".prop_map(Value::from),
        Just(Value::from("w".repeat(70_000))),
    ];
    leaf.prop_recursive(3, 24, 6, |inner| {
        let field = prop_oneof![
            prop::sample::select(vec![
                "event",
                "data",
                "metadata",
                "id",
                "events",
                "key",
                "value",
                "ttl",
                "nx",
                "room",
                "command",
                "request_id",
                "payload",
                "max_events",
                "max_age_secs",
                "from_offset",
                "limit",
                "types",
                "members",
                "url",
                "subscriber_id",
            ])
            .prop_map(str::to_owned),
            "[a-z]{1,6}",
        ];
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(field, inner, 0..6).prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A valid body for some route, to break one field of.
fn valid_body() -> impl Strategy<Value = Value> {
    let room = prop::sample::select(ROOMS.to_vec());
    let key = prop::sample::select(KEYS.to_vec());
    prop_oneof![
        Just(json!({"event": "order.created", "data": {"n": 1}, "metadata": {"by": "fuzz"}, "id": "fuzz-1"})),
        Just(json!({"events": [{"event": "a", "data": 1}, {"event": "b", "data": [2], "id": "fuzz-2"}]})),
        Just(json!({"max_events": 100, "max_age_secs": 3600})),
        key.clone().prop_map(|key| json!({"key": key, "value": {"v": 1}, "nx": false})),
        room.clone().prop_map(
            |room| json!({"command": "stream.publish", "request_id": "r1", "payload": {"room": room, "event": "e", "data": {}}})
        ),
        room.prop_map(|room| json!({"command": "stream.consume", "request_id": "r2", "payload": {"room": room, "from_offset": 0, "limit": 5}})),
        key.prop_map(|key| json!({"command": "kv.set", "request_id": "r3", "payload": {"key": key, "value": "v"}})),
        Just(json!({"id": 1})),
    ]
}

/// `value` with one field, anywhere in it, replaced, removed or added.
fn broken(value: Value, replacement: Value, choice: usize, remove: bool) -> Value {
    fn places(value: &Value, at: &mut Vec<Vec<String>>, here: Vec<String>) {
        if let Value::Object(map) = value {
            for (k, v) in map {
                let mut path = here.clone();
                path.push(k.clone());
                at.push(path.clone());
                places(v, at, path);
            }
        }
        if let Value::Array(items) = value {
            for (i, v) in items.iter().enumerate() {
                let mut path = here.clone();
                path.push(i.to_string());
                places(v, at, path);
            }
        }
    }
    let mut at = Vec::new();
    places(&value, &mut at, Vec::new());
    let mut value = value;
    if at.is_empty() {
        return replacement;
    }
    let path = &at[choice % at.len()];
    let (last, parents) = path.split_last().expect("paths are not empty");
    let mut parent = &mut value;
    for step in parents {
        parent = match parent {
            Value::Object(map) => map.get_mut(step).expect("the path was read from this value"),
            Value::Array(items) => &mut items[step.parse::<usize>().expect("array steps are indexes")],
            _ => unreachable!("paths only go through objects and arrays"),
        };
    }
    if let Value::Object(map) = parent {
        if remove {
            map.remove(last);
        } else {
            map.insert(last.clone(), replacement);
        }
    }
    value
}

fn body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        2 => Just(Vec::new()),
        2 => prop::collection::vec(any::<u8>(), 0..512),
        3 => json_value().prop_map(|v| v.to_string().into_bytes()),
        6 => (valid_body(), json_value(), any::<usize>(), any::<bool>())
            .prop_map(|(v, r, choice, remove)| broken(v, r, choice, remove).to_string().into_bytes()),
        1 => valid_body().prop_map(|v| {
            let mut bytes = v.to_string().into_bytes();
            bytes.truncate(bytes.len() / 2);
            bytes
        }),
        1 => Just(format!("{{\"event\":\"big\",\"data\":\"{}\"}}", "b".repeat(5 << 20)).into_bytes()),
    ]
}

fn probe() -> impl Strategy<Value = Probe> {
    let credential = prop_oneof![
        6 => Just(Credential::Admin),
        2 => Just(Credential::Scoped),
        1 => Just(Credential::None),
        1 => Just(Credential::Wrong),
        1 => prop::sample::select(vec![
            Credential::Malformed(b"Bearer"),
            Credential::Malformed(b"Basic Zm9vOmJhcg=="),
            Credential::Malformed(b"Bearer \xff\xfe"),
            Credential::InQuery(ADMIN),
            Credential::InQuery("nope"),
        ]),
    ];
    let content_type = prop::sample::select(vec![
        None,
        Some("application/json"),
        Some("application/json"),
        Some("application/json; charset=utf-8"),
        Some("text/plain"),
        Some("application/octet-stream"),
    ]);
    (route(), query(), credential, prop::bool::weighted(0.8), content_type, body()).prop_map(
        |((method, path), query, credential, secret, content_type, body)| Probe {
            method,
            path,
            query,
            credential,
            secret,
            content_type,
            body,
        },
    )
}

/// Requests that are valid, authorised and would take the one-node
/// cluster apart or block for long: membership changes with the admin
/// key. Those are tested elsewhere; here they may only be refused.
fn reshapes_the_cluster(probe: &Probe) -> bool {
    let admin = matches!(probe.credential, Credential::Admin | Credential::InQuery(ADMIN));
    admin && probe.path.starts_with("/admin/cluster/") && probe.method != Method::GET
}

/// What a refused request must leave as it was.
#[derive(Debug, PartialEq)]
struct Fingerprint {
    /// Per room: what only writes change (retention trims the oldest
    /// events on its own clock, so the retained range is not compared).
    rooms: BTreeMap<String, Value>,
    kv: BTreeMap<String, Option<Value>>,
}

async fn fingerprint(http: &reqwest::Client, url: &str) -> Fingerprint {
    let get = |path: String| {
        let request = http.get(format!("{url}{path}")).bearer_auth(ADMIN);
        async move {
            let response = request.send().await.unwrap_or_else(|e| panic!("GET {path} (for the state): {e:?}"));
            let status = response.status().as_u16();
            (status, response.json::<Value>().await.unwrap_or_else(|e| panic!("GET {path}: {e}")))
        }
    };
    let (status, list) = get("/stream/list".into()).await;
    assert_eq!(status, 200, "listing rooms: {list}");
    let mut rooms = BTreeMap::new();
    for room in list["rooms"].as_array().expect("rooms") {
        let name = room.as_str().expect("room names are strings");
        let mut target = reqwest::Url::parse(url).expect("node url");
        target.path_segments_mut().expect("a base url").extend(["stream", name, "stats"]);
        let (status, stats) = get(target.path().to_owned()).await;
        assert_eq!(status, 200, "stats of {name}: {stats}");
        let kept = ["generation", "next_offset", "published_total", "max_events", "max_age_secs", "created_at"];
        rooms.insert(name.to_owned(), kept.iter().map(|k| (k.to_string(), stats[k].clone())).collect());
    }
    let mut kv = BTreeMap::new();
    for key in KEYS {
        let (status, answer) = get(format!("/kv/get/{key}")).await;
        kv.insert(key.to_owned(), (status == 200).then(|| answer["value"].clone()));
    }
    Fingerprint { rooms, kv }
}

fn request(http: &reqwest::Client, url: &str, probe: &Probe) -> reqwest::RequestBuilder {
    let mut target = reqwest::Url::parse(url).expect("node url");
    target.set_path(&probe.path);
    {
        let mut pairs = target.query_pairs_mut();
        for (k, v) in &probe.query {
            pairs.append_pair(k, v);
        }
        if let Credential::InQuery(key) = probe.credential {
            pairs.append_pair("api_key", key);
        }
    }
    if target.query() == Some("") {
        target.set_query(None);
    }
    let mut request = http.request(probe.method.clone(), target).body(probe.body.clone());
    request = match probe.credential {
        Credential::Admin => request.bearer_auth(ADMIN),
        Credential::Scoped => request.bearer_auth(SCOPED),
        Credential::Wrong => request.bearer_auth("not-a-key"),
        Credential::Malformed(header) => {
            let value = reqwest::header::HeaderValue::from_bytes(header).expect("visible or obs-text bytes");
            request.header("authorization", value)
        }
        Credential::None | Credential::InQuery(_) => request,
    };
    if probe.secret {
        request = request.header(synap::peer::SECRET_HEADER, SECRET);
    }
    if let Some(content_type) = probe.content_type {
        request = request.header("content-type", content_type);
    }
    request
}

/// Whether the answer refused the request: a 4xx, or a command envelope
/// that says it failed.
fn refused(path: &str, status: u16, body: &[u8]) -> bool {
    if (400..500).contains(&status) {
        return true;
    }
    path == "/api/v1/command"
        && serde_json::from_slice::<Value>(body).is_ok_and(|answer| answer["success"] == Value::Bool(false))
}

fn describe(probe: &Probe) -> String {
    let body = String::from_utf8_lossy(&probe.body);
    let body: String = body.chars().take(300).collect();
    format!(
        "{} {} query={:?} credential={:?} secret={} content-type={:?} body ({} bytes)={body}",
        probe.method,
        probe.path.chars().take(200).collect::<String>(),
        probe.query.iter().map(|(k, v)| (k, v.chars().take(40).collect::<String>())).collect::<Vec<_>>(),
        probe.credential,
        probe.secret,
        probe.content_type,
        probe.body.len()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_input_crashes_a_node_gets_a_5xx_or_changes_anything_when_refused() {
    let dir = tempfile::TempDir::new().expect("temp dir");
    let auth_file = dir.path().join("keys.toml");
    let keys = format!(
        "[[keys]]\nname = \"admin\"\nkey = \"{ADMIN}\"\npermissions = [\"publish\", \"subscribe\", \"admin\"]\n\n\
         [[keys]]\nname = \"tenant\"\nkey = \"{SCOPED}\"\npermissions = [\"publish\", \"subscribe\", \"admin\"]\n\
         rooms = [\"tenant.*\"]\n"
    );
    std::fs::write(&auth_file, keys).expect("writing the keys");
    let args =
        vec!["--auth-file".to_owned(), auth_file.display().to_string(), "--cluster-secret".into(), SECRET.into()];
    let mut node = NodeProc::new(1, free_port(), dir.path().join("node1"), dir.path().join("node1.log"), args);
    node.start();
    let admin = synap::client::Client::new(&node.url).with_api_key(Some(ADMIN.to_owned()));
    wait_for(READY, "the node to be ready", || {
        let admin = admin.clone();
        async move { admin.ready().await.is_ok() }
    })
    .await;
    let seed = reqwest::Client::new();
    for room in ROOMS {
        let created = seed.put(format!("{}/stream/{room}", node.url)).bearer_auth(ADMIN).send().await;
        assert!(created.expect("creating a room").status().is_success(), "creating {room}");
        admin.publish(room, "seed", &json!({"room": room}), None, None).await.expect("seeding a room");
    }
    for key in KEYS {
        admin.kv_set(key, "\"seed\"", None, false).await.expect("seeding a key");
    }

    // A connection per request: a server closes a connection after some
    // refusals, and a pooled connection reused just as it closes fails the
    // next request for reasons of the client's own.
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .pool_max_idle_per_host(0)
        .build()
        .expect("http client");
    let mut runner = TestRunner::deterministic();
    let strategy = probe();
    // Keys a successful request may have given a TTL: they may vanish on
    // their own later.
    let mut may_expire: BTreeSet<String> = BTreeSet::new();
    let mut statuses: BTreeMap<u16, usize> = BTreeMap::new();
    let mut before = fingerprint(&http, &node.url).await;
    let mut sent = 0;
    while sent < CASES {
        let probe = strategy.new_tree(&mut runner).expect("a case").current();
        if reshapes_the_cluster(&probe) {
            continue;
        }
        sent += 1;
        let what = describe(&probe);
        let response = match request(&http, &node.url, &probe).send().await {
            Ok(response) => response,
            // A server that refuses a request before reading its body
            // closes the connection; a client still sending megabytes sees
            // a reset instead of the answer. Only oversized bodies may.
            Err(e) if probe.body.len() > OVERSIZED => {
                let health = http.get(format!("{}/health", node.url)).send().await;
                assert!(health.is_ok_and(|h| h.status() == 200), "the node is down after {what}: {e}");
                *statuses.entry(0).or_default() += 1;
                continue;
            }
            Err(e) => panic!("no answer to {what}: {e}\nnode log:\n{}", node.log_tail(30)),
        };
        let status = response.status().as_u16();
        let body = response.bytes().await.unwrap_or_else(|e| panic!("reading the answer to {what}: {e}"));
        *statuses.entry(status).or_default() += 1;
        assert!(
            status < 500,
            "{what}\nanswered {status}: {}\nnode log:\n{}",
            String::from_utf8_lossy(&body),
            node.log_tail(30)
        );
        assert!(node.is_running(), "the node died after {what}\n{}", node.log_tail(30));
        let after = fingerprint(&http, &node.url).await;
        if refused(&probe.path, status, &body) {
            let mut expected_kv = before.kv.clone();
            for key in &may_expire {
                if after.kv.get(key) == Some(&None) {
                    expected_kv.insert(key.clone(), None);
                }
            }
            assert_eq!(
                (&after.rooms, &after.kv),
                (&before.rooms, &expected_kv),
                "{what}\nwas refused ({status}: {}) but changed the state",
                String::from_utf8_lossy(&body)
            );
        } else if String::from_utf8_lossy(&probe.body).contains("ttl") {
            may_expire.extend(KEYS.iter().map(|k| k.to_string()));
        }
        before = after;
    }
    eprintln!("answers by status (0: cut off while sending an oversized body): {statuses:?}");
    // The fuzzer reached past the front door: most cases were refused for
    // what is in them, not for a missing key.
    let refusals: usize = statuses.iter().filter(|(s, _)| (400..500).contains(*s)).map(|(_, n)| n).sum();
    let unauthenticated = statuses.get(&401).copied().unwrap_or(0);
    assert!(statuses.get(&200).copied().unwrap_or(0) > 0, "some cases succeed: {statuses:?}");
    assert!(refusals > unauthenticated * 2, "most refusals are not about credentials: {statuses:?}");
    // And the node still does its job.
    let published = admin.publish("orders", "after", &json!({"ok": true}), None, None).await;
    published.expect("the node still accepts writes after the fuzzing");
    node.stop();
}
