//! Conversation routes, all behind authentication and for members only (a non-member gets
//! 403 whether the conversation exists or not): create and list conversations, read one,
//! add and remove members, read messages by `seq`, and send (the same send as the socket's
//! `message:send`, for workers and scripts).

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{delete, get, post};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::{Actor, ConversationView, Message, SendMessage};
use crate::error::{ApiError, FieldError};
use crate::http::{Json, Query, Validate};
use crate::identity::{Principal, Role};
use crate::state::AppState;

/// The routes, to be mounted behind authentication.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/conversations", get(list).post(create))
        .route("/v1/conversations/{id}", get(read))
        .route("/v1/conversations/{id}/members", post(add_member))
        .route("/v1/conversations/{id}/members/{user_id}", delete(remove_member))
        .route("/v1/conversations/{id}/messages", get(messages).post(send))
}

fn actor(principal: &Principal) -> Actor<'_> {
    Actor { user_id: &principal.user_id, is_admin: principal.role == Role::Admin }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateConversation {
    pub title: Option<String>,
    /// The other members; the caller is always one and owns the conversation.
    #[serde(default)]
    pub member_ids: Vec<String>,
    /// Adds the built-in echo agent (account `echo-agent`) as a member: it streams each
    /// message back word by word. 422 when the server runs without it.
    #[serde(default)]
    pub with_agent: bool,
}

impl Validate for CreateConversation {}
impl Validate for SendMessage {}

#[utoipa::path(post, path = "/v1/conversations", tag = "conversations", security(("bearer" = [])),
    request_body = CreateConversation,
    responses((status = 201, body = ConversationView), (status = 422, description = "Invalid fields")))]
pub async fn create(
    State(state): State<AppState>,
    principal: Principal,
    Json(mut body): Json<CreateConversation>,
) -> Result<(StatusCode, Json<ConversationView>), ApiError> {
    let limits = &state.config.conversations;
    if body.with_agent {
        body.member_ids.push(super::echo::member(limits)?.to_owned());
    }
    let view =
        super::create(&state.db, &state.bus, limits, &principal.user_id, body.title.as_deref(), &body.member_ids)
            .await?;
    Ok((StatusCode::CREATED, Json(view)))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// The `next_cursor` of the previous page.
    pub cursor: Option<String>,
    /// 1 to 200; default 50.
    pub limit: Option<u32>,
}

impl Validate for ListQuery {
    fn validate(&self) -> Vec<FieldError> {
        let mut errors = Vec::new();
        if self.limit.is_some_and(|l| !(1..=200).contains(&l)) {
            errors.push(FieldError::new("limit", "must be between 1 and 200"));
        }
        if self.cursor.as_ref().is_some_and(|c| c.is_empty() || c.len() > 64) {
            errors.push(FieldError::new("cursor", "is not a cursor from this API"));
        }
        errors
    }
}

/// A page of the caller's conversations, by id.
#[derive(Debug, Serialize, ToSchema)]
pub struct ConversationList {
    pub conversations: Vec<ConversationView>,
    /// Pass as `cursor` for the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

#[utoipa::path(get, path = "/v1/conversations", tag = "conversations", security(("bearer" = [])), params(ListQuery),
    responses((status = 200, body = ConversationList), (status = 422, description = "Invalid cursor or limit")))]
pub async fn list(
    State(state): State<AppState>,
    principal: Principal,
    Query(query): Query<ListQuery>,
) -> Result<Json<ConversationList>, ApiError> {
    let limit = query.limit.unwrap_or(50);
    let (conversations, next_cursor) =
        super::list(&state.db, &principal.user_id, query.cursor.as_deref(), limit).await?;
    Ok(Json(ConversationList { conversations, next_cursor }))
}

#[utoipa::path(get, path = "/v1/conversations/{id}", tag = "conversations", security(("bearer" = [])),
    params(("id" = String, Path)),
    responses((status = 200, body = ConversationView), (status = 403, description = "Not a member")))]
pub async fn read(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<Json<ConversationView>, ApiError> {
    Ok(Json(super::get(&state.db, &id, &principal.user_id).await?))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddMember {
    pub user_id: String,
}

impl Validate for AddMember {}

#[utoipa::path(post, path = "/v1/conversations/{id}/members", tag = "conversations", security(("bearer" = [])),
    params(("id" = String, Path)), request_body = AddMember,
    responses((status = 201, body = ConversationView, description = "Added"),
        (status = 200, body = ConversationView, description = "Already a member"),
        (status = 403, description = "Not a member"), (status = 422, description = "No such user, or the conversation is full")))]
pub async fn add_member(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
    Json(body): Json<AddMember>,
) -> Result<(StatusCode, Json<ConversationView>), ApiError> {
    let added =
        super::add_member(&state.db, &state.bus, &state.config.conversations, actor(&principal), &id, &body.user_id)
            .await?;
    let view = super::get(&state.db, &id, &body.user_id).await?;
    Ok((if added { StatusCode::CREATED } else { StatusCode::OK }, Json(view)))
}

#[utoipa::path(delete, path = "/v1/conversations/{id}/members/{user_id}", tag = "conversations",
    security(("bearer" = [])), params(("id" = String, Path), ("user_id" = String, Path)),
    responses((status = 204, description = "Removed"), (status = 403, description = "Not the owner, an admin or the member"),
        (status = 404, description = "Not a member")))]
pub async fn remove_member(
    State(state): State<AppState>,
    principal: Principal,
    Path((id, user_id)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    super::remove_member(&state.db, &state.bus, actor(&principal), &id, &user_id).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct MessagesQuery {
    /// Messages with a greater seq (default 0: from the first).
    pub after_seq: Option<i64>,
    /// Messages with a smaller seq; alone, the page just before it.
    pub before_seq: Option<i64>,
    /// 1 to `conversations.max_page_size`; default `conversations.page_size`.
    pub limit: Option<u32>,
}

impl Validate for MessagesQuery {
    fn validate(&self) -> Vec<FieldError> {
        let mut errors = Vec::new();
        if self.after_seq.is_some_and(|s| s < 0) {
            errors.push(FieldError::new("after_seq", "must be 0 or more"));
        }
        if self.before_seq.is_some_and(|s| s < 1) {
            errors.push(FieldError::new("before_seq", "must be 1 or more"));
        }
        if self.limit == Some(0) {
            errors.push(FieldError::new("limit", "must be at least 1"));
        }
        errors
    }
}

/// Messages ordered by seq.
#[derive(Debug, Serialize, ToSchema)]
pub struct MessagePage {
    pub messages: Vec<Message>,
    /// Whether more messages lie in the asked range beyond this page.
    pub has_more: bool,
}

#[utoipa::path(get, path = "/v1/conversations/{id}/messages", tag = "conversations", security(("bearer" = [])),
    params(("id" = String, Path), MessagesQuery),
    responses((status = 200, body = MessagePage), (status = 403, description = "Not a member"),
        (status = 422, description = "Invalid range or limit")))]
pub async fn messages(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
    Query(query): Query<MessagesQuery>,
) -> Result<Json<MessagePage>, ApiError> {
    let limits = &state.config.conversations;
    let limit = query.limit.unwrap_or(limits.page_size);
    if limit > limits.max_page_size {
        let message = format!("must be between 1 and {}", limits.max_page_size);
        return Err(ApiError::Validation(vec![FieldError::new("limit", message)]));
    }
    let (messages, has_more) =
        super::page(&state.db, &principal.user_id, &id, query.after_seq, query.before_seq, limit).await?;
    Ok(Json(MessagePage { messages, has_more }))
}

#[utoipa::path(post, path = "/v1/conversations/{id}/messages", tag = "conversations", security(("bearer" = [])),
    params(("id" = String, Path)), request_body = SendMessage,
    responses((status = 201, body = Message, description = "Stored"),
        (status = 200, body = Message, description = "A retry: the message first stored with this client_msg_id"),
        (status = 403, description = "Not a member"), (status = 422, description = "Invalid fields")))]
pub async fn send(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
    Json(body): Json<SendMessage>,
) -> Result<(StatusCode, Json<Message>), ApiError> {
    let sender = super::Sender { user_id: &principal.user_id, kind: super::SenderKind::of(&principal) };
    let sent = super::send_from(&state.db, &state.bus, &state.config.conversations, sender, &id, &body).await?;
    Ok((if sent.created { StatusCode::CREATED } else { StatusCode::OK }, Json(sent.message)))
}
