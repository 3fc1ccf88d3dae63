//! Conversations over REST on the suite's backend: members create, list, read, send and page
//! through messages by seq; a retried send is stored once; non-members get 403 and store
//! nothing; the owner or an admin removes others and a member may leave; malformed,
//! oversized and hostile input gets a precise problem; concurrent senders get gapless seqs.

use serde_json::{Value, json};

use crate::common::{TestApp, TestUser, assert_problem};
use crate::identity_support::{delete_as, fetch_strings, post};

/// Creates a conversation of `owner` with `members` and returns its id.
pub(crate) async fn create_conversation(app: &TestApp, owner: &TestUser, members: &[&TestUser]) -> String {
    let ids: Vec<&str> = members.iter().map(|m| m.id.as_str()).collect();
    let response =
        post(app, Some(&owner.access_token), "/v1/conversations", &json!({ "title": "t", "member_ids": ids })).await;
    assert_eq!(response.status(), 201, "conversation created");
    let body: Value = response.json().await.expect("json");
    body["id"].as_str().expect("id").to_owned()
}

/// Sends over REST and returns the stored message.
pub(crate) async fn send(
    app: &TestApp,
    sender: &TestUser,
    conversation: &str,
    client_msg_id: &str,
    body: &str,
) -> Value {
    let path = format!("/v1/conversations/{conversation}/messages");
    let response =
        post(app, Some(&sender.access_token), &path, &json!({ "client_msg_id": client_msg_id, "body": body })).await;
    assert_eq!(response.status(), 201, "message stored");
    response.json().await.expect("json")
}

/// How many messages the conversation stores.
pub(crate) async fn stored(app: &TestApp, conversation: &str) -> usize {
    fetch_strings(app, &format!("SELECT id FROM messages WHERE conversation_id = '{conversation}'")).await.len()
}

async fn get_json(app: &TestApp, user: &TestUser, path: &str) -> Value {
    let response = app.get_as(&user.access_token, path).await;
    assert_eq!(response.status(), 200, "GET {path}");
    response.json().await.expect("json")
}

#[tokio::test]
async fn members_create_list_read_send_and_page_through_messages_by_seq() {
    let app = TestApp::spawn().await;
    let (a, b) = (app.user("user").await, app.user("user").await);
    let conversation = create_conversation(&app, &a, &[&b]).await;

    let view = get_json(&app, &b, &format!("/v1/conversations/{conversation}")).await;
    assert_eq!(view["owner_id"], json!(a.id));
    let mut members = vec![a.id.clone(), b.id.clone()];
    members.sort();
    assert_eq!(view["member_ids"], json!(members));
    assert_eq!(
        (view["last_seq"].as_i64(), view["ack_seq"].as_i64(), view["unread"].as_i64()),
        (Some(0), Some(0), Some(0))
    );

    for i in 1..=5 {
        let message =
            send(&app, if i % 2 == 0 { &b } else { &a }, &conversation, &format!("c{i}"), &format!("hello {i}")).await;
        assert_eq!(message["seq"], i, "{message}");
        assert_eq!(message["conversation_id"], json!(conversation));
        assert_eq!(message["body"], json!(format!("hello {i}")));
        for field in ["id", "sender_id", "client_msg_id", "created_at"] {
            assert!(message[field].is_string(), "{field}: {message}");
        }
    }
    // A retried send answers 200 with the first message and stores nothing.
    let path = format!("/v1/conversations/{conversation}/messages");
    let retry = post(&app, Some(&a.access_token), &path, &json!({ "client_msg_id": "c1", "body": "other" })).await;
    assert_eq!(retry.status(), 200);
    let retry: Value = retry.json().await.expect("json");
    assert_eq!((retry["seq"].as_i64(), retry["body"].as_str()), (Some(1), Some("hello 1")));
    assert_eq!(stored(&app, &conversation).await, 5);

    let list = get_json(&app, &b, "/v1/conversations").await;
    let entry = &list["conversations"][0];
    assert_eq!((entry["id"].as_str(), entry["last_seq"].as_i64()), (Some(conversation.as_str()), Some(5)));
    assert_eq!((entry["ack_seq"].as_i64(), entry["unread"].as_i64()), (Some(0), Some(5)));

    let seqs = |page: &Value| -> Vec<i64> {
        page["messages"].as_array().expect("messages").iter().map(|m| m["seq"].as_i64().expect("seq")).collect()
    };
    let page = get_json(&app, &b, &format!("{path}?limit=2")).await;
    assert_eq!((seqs(&page), page["has_more"].as_bool()), (vec![1, 2], Some(true)));
    let page = get_json(&app, &b, &format!("{path}?after_seq=2&limit=10")).await;
    assert_eq!((seqs(&page), page["has_more"].as_bool()), (vec![3, 4, 5], Some(false)));
    let page = get_json(&app, &b, &format!("{path}?before_seq=5&limit=2")).await;
    assert_eq!((seqs(&page), page["has_more"].as_bool()), (vec![3, 4], Some(true)));
    let page = get_json(&app, &b, &format!("{path}?after_seq=1&before_seq=4")).await;
    assert_eq!(seqs(&page), vec![2, 3]);
}

#[tokio::test]
async fn the_conversation_list_is_paginated_by_cursor() {
    let app = TestApp::spawn().await;
    let (a, b) = (app.user("user").await, app.user("user").await);
    let mut created = Vec::new();
    for _ in 0..5 {
        created.push(create_conversation(&app, &a, &[&b]).await);
    }
    created.sort();
    let mut seen = Vec::new();
    let mut path = "/v1/conversations?limit=2".to_owned();
    loop {
        let page = get_json(&app, &a, &path).await;
        seen.extend(
            page["conversations"].as_array().expect("list").iter().map(|c| c["id"].as_str().expect("id").to_owned()),
        );
        match page["next_cursor"].as_str() {
            Some(cursor) => path = format!("/v1/conversations?limit=2&cursor={cursor}"),
            None => break,
        }
    }
    assert_eq!(seen, created);
}

#[tokio::test]
async fn a_non_member_cannot_read_send_or_add_and_nothing_is_stored() {
    let app = TestApp::spawn().await;
    let (a, b, c) = (app.user("user").await, app.user("user").await, app.user("user").await);
    let conversation = create_conversation(&app, &a, &[&b]).await;
    send(&app, &a, &conversation, "m1", "for a and b").await;

    for path in [format!("/v1/conversations/{conversation}"), format!("/v1/conversations/{conversation}/messages")] {
        assert_problem(app.get_as(&c.access_token, &path).await, 403).await;
    }
    let path = format!("/v1/conversations/{conversation}/messages");
    let response =
        post(&app, Some(&c.access_token), &path, &json!({ "client_msg_id": "x", "body": "intrusion" })).await;
    assert_problem(response, 403).await;
    let path = format!("/v1/conversations/{conversation}/members");
    assert_problem(post(&app, Some(&c.access_token), &path, &json!({ "user_id": c.id })).await, 403).await;
    // A conversation that does not exist answers the same.
    let missing = "/v1/conversations/00000000-0000-4000-8000-000000000000/messages";
    assert_problem(app.get_as(&c.access_token, missing).await, 403).await;

    assert_eq!(stored(&app, &conversation).await, 1);
    let members = fetch_strings(
        &app,
        &format!("SELECT user_id FROM conversation_members WHERE conversation_id = '{conversation}'"),
    )
    .await;
    assert_eq!(members.len(), 2, "{members:?}");
    let list = get_json(&app, &c, "/v1/conversations").await;
    assert_eq!(list["conversations"], json!([]));
}

#[tokio::test]
async fn members_add_others_a_member_leaves_and_only_the_owner_or_an_admin_removes_others() {
    let app = TestApp::spawn().await;
    let (owner, b, c, d) =
        (app.user("user").await, app.user("user").await, app.user("user").await, app.user("user").await);
    let admin = app.user("admin").await;
    let conversation = create_conversation(&app, &owner, &[&b]).await;
    send(&app, &owner, &conversation, "m1", "before c joined").await;
    let members = format!("/v1/conversations/{conversation}/members");

    let response = post(&app, Some(&b.access_token), &members, &json!({ "user_id": c.id })).await;
    assert_eq!(response.status(), 201, "a member adds another user");
    let view: Value = response.json().await.expect("json");
    assert_eq!(
        (view["ack_seq"].as_i64(), view["unread"].as_i64()),
        (Some(1), Some(0)),
        "a new member starts at the latest message: {view}"
    );
    let again = post(&app, Some(&b.access_token), &members, &json!({ "user_id": c.id })).await;
    assert_eq!(again.status(), 200, "already a member");

    assert_problem(delete_as(&app, &b.access_token, &format!("{members}/{}", c.id)).await, 403).await;
    assert_eq!(delete_as(&app, &c.access_token, &format!("{members}/{}", c.id)).await.status(), 204, "c leaves");
    assert_problem(app.get_as(&c.access_token, &format!("/v1/conversations/{conversation}")).await, 403).await;

    assert_eq!(post(&app, Some(&owner.access_token), &members, &json!({ "user_id": d.id })).await.status(), 201);
    assert_eq!(
        delete_as(&app, &owner.access_token, &format!("{members}/{}", d.id)).await.status(),
        204,
        "the owner removes d"
    );
    assert_eq!(
        delete_as(&app, &admin.access_token, &format!("{members}/{}", b.id)).await.status(),
        204,
        "an admin removes b"
    );
    assert_problem(delete_as(&app, &owner.access_token, &format!("{members}/{}", b.id)).await, 404).await;
    let view = get_json(&app, &owner, &format!("/v1/conversations/{conversation}")).await;
    assert_eq!(view["member_ids"], json!([owner.id]));
}

#[tokio::test]
async fn malformed_oversized_and_hostile_input_gets_a_precise_problem_and_stores_nothing() {
    let app = TestApp::spawn_with(
        &[("CONVERSATIONS_MAX_BODY_BYTES", "100"), ("CONVERSATIONS_MAX_MEMBERS", "3")],
        axum::Router::new(),
    )
    .await;
    let (a, b, c, d) = (app.user("user").await, app.user("user").await, app.user("user").await, app.user("user").await);
    let conversation = create_conversation(&app, &a, &[&b, &c]).await;
    let path = format!("/v1/conversations/{conversation}/messages");
    let token = Some(a.access_token.as_str());

    let cases = [
        (json!({ "client_msg_id": "x", "body": "é".repeat(51) }), "body"),
        (json!({ "client_msg_id": "x", "body": "   " }), "body"),
        (json!({ "client_msg_id": "", "body": "hi" }), "client_msg_id"),
        (json!({ "client_msg_id": "x".repeat(129), "body": "hi" }), "client_msg_id"),
        (json!({ "client_msg_id": "x", "body": "a\u{0}b" }), "body"),
    ];
    for (body, field) in cases {
        let problem = assert_problem(post(&app, token, &path, &body).await, 422).await;
        assert!(
            problem["errors"].as_array().expect("errors").iter().any(|e| e["field"] == field),
            "{field}: {problem}"
        );
    }
    for body in [
        json!({ "client_msg_id": "x" }),
        json!({ "client_msg_id": 1, "body": "hi" }),
        json!({ "client_msg_id": "x", "body": "hi", "extra": 1 }),
        json!([1]),
    ] {
        let response = post(&app, token, &path, &body).await;
        let status = response.status().as_u16();
        assert!(status == 400 || status == 422, "{body}: {status}");
        assert_problem(response, status).await;
    }
    assert_eq!(stored(&app, &conversation).await, 0);

    for query in ["limit=0", "limit=201", "after_seq=-1", "before_seq=0", "after_seq=abc", "bogus=1"] {
        let response = app.get_as(&a.access_token, &format!("{path}?{query}")).await;
        assert_problem(response, 422).await;
    }
    // The member cap: three members already.
    let members = format!("/v1/conversations/{conversation}/members");
    assert_problem(post(&app, token, &members, &json!({ "user_id": d.id })).await, 422).await;
    let too_many = json!({ "member_ids": [b.id, c.id, d.id] });
    assert_problem(post(&app, token, "/v1/conversations", &too_many).await, 422).await;
    let unknown = json!({ "member_ids": ["no-such-user"] });
    assert_problem(post(&app, token, "/v1/conversations", &unknown).await, 422).await;
    assert_problem(post(&app, token, &members, &json!({ "user_id": "no-such-user" })).await, 422).await;
}

#[tokio::test]
async fn concurrent_rest_senders_get_gapless_unique_seqs() {
    let app = TestApp::spawn_with(&[("DATABASE_POOL_SIZE", "8")], axum::Router::new()).await;
    let mut users = Vec::new();
    for _ in 0..10 {
        users.push(app.user("user").await);
    }
    let others: Vec<&TestUser> = users[1..].iter().collect();
    let conversation = create_conversation(&app, &users[0], &others).await;
    let mut tasks = Vec::new();
    for (u, user) in users.iter().enumerate() {
        for i in 0..10 {
            let (client, url, token) = (
                app.client.clone(),
                app.url(&format!("/v1/conversations/{conversation}/messages")),
                user.access_token.clone(),
            );
            tasks.push(tokio::spawn(async move {
                let response = client
                    .post(url)
                    .bearer_auth(token)
                    .json(&json!({ "client_msg_id": format!("{u}-{i}"), "body": "x" }))
                    .send()
                    .await
                    .expect("sent");
                assert_eq!(response.status(), 201);
                response.json::<Value>().await.expect("json")["seq"].as_i64().expect("seq")
            }));
        }
    }
    let mut seqs = Vec::new();
    for task in tasks {
        seqs.push(task.await.expect("task"));
    }
    seqs.sort_unstable();
    assert_eq!(seqs, (1..=100).collect::<Vec<i64>>());
    assert_eq!(stored(&app, &conversation).await, 100);
}

/// The database alone keeps seqs gapless: transactions that take the next seq and insert,
/// concurrently and without the node's turn-taking (as senders on different nodes do).
#[tokio::test]
async fn the_database_serialises_senders_of_one_conversation_without_the_nodes_turns() {
    use atom::storage::conversations::{MessageRow, insert_message, next_seq};
    let app = TestApp::spawn_with(
        &[("DATABASE_POOL_SIZE", "8"), ("DATABASE_ACQUIRE_TIMEOUT_SECS", "30")],
        axum::Router::new(),
    )
    .await;
    let a = app.user("user").await;
    let conversation = create_conversation(&app, &a, &[]).await;
    let mut tasks = Vec::new();
    for i in 0..40 {
        let (db, conversation, sender) = (app.state.db.clone(), conversation.clone(), a.id.clone());
        tasks.push(tokio::spawn(async move {
            let mut tx = db.begin().await.expect("begin");
            let seq = next_seq(&mut tx, &conversation, 1).await.expect("next").expect("exists");
            tokio::task::yield_now().await;
            let row = MessageRow {
                id: uuid::Uuid::new_v4().to_string(),
                conversation_id: conversation,
                seq,
                sender_id: sender,
                client_msg_id: format!("raw-{i}"),
                body: "x".to_owned(),
                created_at: 1,
                sender_kind: "user".to_owned(),
                stream_id: None,
            };
            insert_message(&mut tx, &row).await.expect("insert");
            tx.commit().await.expect("commit");
            seq
        }));
    }
    let mut seqs = Vec::new();
    for task in tasks {
        seqs.push(task.await.expect("task"));
    }
    seqs.sort_unstable();
    assert_eq!(seqs, (1..=40).collect::<Vec<i64>>());
}

#[tokio::test]
async fn retention_deletes_messages_past_their_age_and_reading_resumes_at_the_oldest_kept() {
    let app = TestApp::spawn().await;
    let (a, b) = (app.user("user").await, app.user("user").await);
    let conversation = create_conversation(&app, &a, &[&b]).await;
    for i in 1..=3 {
        send(&app, &a, &conversation, &format!("m{i}"), "x").await;
    }
    crate::identity_support::execute(
        &app,
        &format!("UPDATE messages SET created_at = 1 WHERE conversation_id = '{conversation}' AND seq < 3"),
    )
    .await;
    let deleted = atom::conversations::retention::sweep(&app.state.db, 1_000).await.expect("sweep");
    assert_eq!(deleted, 2);
    let page = get_json(&app, &b, &format!("/v1/conversations/{conversation}/messages")).await;
    let seqs: Vec<i64> =
        page["messages"].as_array().expect("messages").iter().map(|m| m["seq"].as_i64().expect("seq")).collect();
    assert_eq!(seqs, vec![3]);
    // Numbering goes on from the conversation's last seq, not from what is kept.
    assert_eq!(send(&app, &a, &conversation, "m4", "x").await["seq"], 4);
}
