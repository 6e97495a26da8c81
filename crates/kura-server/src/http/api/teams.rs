//! Teams, members, invitations, groups and team role grants.

use std::collections::BTreeSet;

use axum::Json;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use http::StatusCode;
use http::request::Parts;
use kura_identity::{
    Acceptance, GrantSubject, IssuedInvitation, MfaStrength, TeamMfaPolicy, TeamRole,
};
use kura_types::{AccountId, GroupId, InvitationId, TeamId};
use secrecy::{ExposeSecret as _, SecretString};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::accounts::AccountOut;
use super::auth::{Auth, Ctx, finish, has_credentials};
use super::body::ApiJson;
use super::error::ApiError;
use super::parse_id;
use crate::http::AppState;

#[derive(Debug, Serialize)]
pub struct TeamOut {
    id: String,
    name: String,
    mfa_policy: TeamMfaPolicy,
    #[serde(with = "time::serde::rfc3339")]
    created_at: OffsetDateTime,
}

impl From<kura_identity::Team> for TeamOut {
    fn from(t: kura_identity::Team) -> Self {
        Self {
            id: t.id.to_string(),
            name: t.name,
            mfa_policy: t.mfa_policy,
            created_at: t.created_at,
        }
    }
}

#[derive(Debug, Serialize)]
pub struct InvitationIssued {
    id: String,
    team_id: String,
    email: String,
    role: TeamRole,
    #[serde(with = "time::serde::rfc3339")]
    expires_at: OffsetDateTime,
    /// The single-use token, shown once.
    token: String,
    /// The console path to hand to the invitee (the token in the fragment,
    /// which browsers never send to servers or log).
    link: String,
}

fn issued(i: &IssuedInvitation) -> InvitationIssued {
    let token = i.token.reveal().to_owned();
    InvitationIssued {
        id: i.id.to_string(),
        team_id: i.team.to_string(),
        email: i.email.as_str().to_owned(),
        role: i.role,
        expires_at: i.expires_at,
        link: format!("/invitations/accept#{token}"),
        token,
    }
}

/// `POST /api/v1/teams`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewTeam {
    name: String,
    owner_email: String,
}

#[derive(Debug, Serialize)]
pub struct TeamCreatedOut {
    id: String,
    owner_invitation: InvitationIssued,
}

/// Creates a team and invites its first owner.
pub async fn create(
    State(state): State<AppState>,
    auth: Auth,
    ApiJson(req): ApiJson<NewTeam>,
) -> Result<Response, ApiError> {
    let audited = state
        .identity
        .at(auth.ctx.facts())
        .create_team(&auth.principal, &req.name, &req.owner_email)
        .await;
    let created = finish(&state, &auth.ctx, audited).await?;
    let body = TeamCreatedOut {
        id: created.team.to_string(),
        owner_invitation: issued(&created.owner_invitation),
    };
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

/// The teams I belong to.
pub async fn list(
    State(state): State<AppState>,
    auth: Auth,
) -> Result<Json<Vec<TeamOut>>, ApiError> {
    let audited = state
        .identity
        .at(auth.ctx.facts())
        .my_teams(&auth.principal)
        .await;
    let teams = finish(&state, &auth.ctx, audited).await?;
    Ok(Json(teams.into_iter().map(Into::into).collect()))
}

/// One team.
pub async fn get(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
) -> Result<Json<TeamOut>, ApiError> {
    let team: TeamId = parse_id("id", &id)?;
    let audited = state
        .identity
        .at(auth.ctx.facts())
        .team(&auth.principal, team)
        .await;
    Ok(Json(finish(&state, &auth.ctx, audited).await?.into()))
}

/// `PUT /api/v1/teams/{id}/mfa-policy`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MfaPolicyBody {
    /// `none`, `all_members` or `groups`.
    applies_to: String,
    strength: Option<MfaStrength>,
    #[serde(default)]
    groups: Vec<String>,
}

impl MfaPolicyBody {
    fn into_policy(self) -> Result<TeamMfaPolicy, ApiError> {
        let strength = || {
            self.strength
                .ok_or_else(|| ApiError::invalid("strength", "required unless applies_to is none"))
        };
        match self.applies_to.as_str() {
            "none" => Ok(TeamMfaPolicy::None),
            "all_members" => Ok(TeamMfaPolicy::AllMembers {
                strength: strength()?,
            }),
            "groups" => {
                let groups = self
                    .groups
                    .iter()
                    .map(|g| parse_id::<GroupId>("groups", g))
                    .collect::<Result<BTreeSet<_>, _>>()?;
                Ok(TeamMfaPolicy::Groups {
                    groups,
                    strength: strength()?,
                })
            }
            _ => Err(ApiError::invalid(
                "applies_to",
                "must be none, all_members or groups",
            )),
        }
    }
}

/// Sets who in the team must use MFA.
pub async fn set_mfa_policy(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<MfaPolicyBody>,
) -> Result<StatusCode, ApiError> {
    let team: TeamId = parse_id("id", &id)?;
    let policy = req.into_policy()?;
    let audited = state
        .identity
        .at(auth.ctx.facts())
        .set_team_mfa_policy(&auth.principal, team, policy)
        .await;
    finish(&state, &auth.ctx, audited).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Serialize)]
pub struct MemberOut {
    account: AccountOut,
    roles: BTreeSet<TeamRole>,
    #[serde(with = "time::serde::rfc3339")]
    joined_at: OffsetDateTime,
}

/// The team's members.
pub async fn members(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
) -> Result<Json<Vec<MemberOut>>, ApiError> {
    let team: TeamId = parse_id("id", &id)?;
    let audited = state
        .identity
        .at(auth.ctx.facts())
        .members(&auth.principal, team)
        .await;
    let members = finish(&state, &auth.ctx, audited).await?;
    Ok(Json(
        members
            .into_iter()
            .map(|m| MemberOut {
                account: m.account.into(),
                roles: m.roles,
                joined_at: m.joined_at,
            })
            .collect(),
    ))
}

/// Removes a member from the team.
pub async fn remove_member(
    State(state): State<AppState>,
    auth: Auth,
    Path((id, account)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let team: TeamId = parse_id("id", &id)?;
    let account: AccountId = parse_id("account", &account)?;
    let audited = state
        .identity
        .at(auth.ctx.facts())
        .remove_member(&auth.principal, team, account)
        .await;
    finish(&state, &auth.ctx, audited).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /api/v1/teams/{id}/invitations`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewInvitation {
    email: String,
    role: TeamRole,
}

/// Invites someone; the token is shown once.
pub async fn invite(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<NewInvitation>,
) -> Result<Response, ApiError> {
    let team: TeamId = parse_id("id", &id)?;
    let audited = state
        .identity
        .at(auth.ctx.facts())
        .invite(&auth.principal, team, &req.email, req.role)
        .await;
    let i = finish(&state, &auth.ctx, audited).await?;
    Ok((StatusCode::CREATED, Json(issued(&i))).into_response())
}

#[derive(Debug, Serialize)]
pub struct InvitationOut {
    id: String,
    email: String,
    role: TeamRole,
    invited_by: String,
    #[serde(with = "time::serde::rfc3339")]
    created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    expires_at: OffsetDateTime,
}

/// The team's open invitations.
pub async fn invitations(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
) -> Result<Json<Vec<InvitationOut>>, ApiError> {
    let team: TeamId = parse_id("id", &id)?;
    let audited = state
        .identity
        .at(auth.ctx.facts())
        .invitations(&auth.principal, team)
        .await;
    let list = finish(&state, &auth.ctx, audited).await?;
    Ok(Json(
        list.into_iter()
            .map(|i| InvitationOut {
                id: i.id.to_string(),
                email: i.email,
                role: i.role,
                invited_by: i.invited_by.to_string(),
                created_at: i.created_at,
                expires_at: i.expires_at,
            })
            .collect(),
    ))
}

/// Revokes an open invitation.
pub async fn revoke_invitation(
    State(state): State<AppState>,
    auth: Auth,
    Path((id, invitation)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let team: TeamId = parse_id("id", &id)?;
    let invitation: InvitationId = parse_id("invitation", &invitation)?;
    let audited = state
        .identity
        .at(auth.ctx.facts())
        .revoke_invitation(&auth.principal, team, invitation)
        .await;
    finish(&state, &auth.ctx, audited).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /api/v1/invitations/accept`: signed in as the invited address, or
/// with a display name and password for a new account.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AcceptRequest {
    token: SecretString,
    display_name: Option<String>,
    password: Option<SecretString>,
}

#[derive(Debug, Serialize)]
pub struct AcceptedOut {
    team_id: String,
    account_id: String,
    role: TeamRole,
    created_account: bool,
}

/// Accepts an invitation.
pub async fn accept(
    State(state): State<AppState>,
    mut parts: Parts,
    ApiJson(req): ApiJson<AcceptRequest>,
) -> Result<Response, ApiError> {
    use axum::extract::FromRequestParts as _;
    let (audited, ctx) = match (&req.display_name, &req.password) {
        (Some(display_name), Some(password)) if !has_credentials(&parts.headers) => {
            let ctx = Ctx::from_request_parts(&mut parts, &state)
                .await
                .unwrap_or_default();
            let acceptance = Acceptance::NewAccount {
                display_name,
                password,
            };
            (
                state
                    .identity
                    .at(ctx.facts())
                    .accept_invitation(req.token.expose_secret(), acceptance)
                    .await,
                ctx,
            )
        }
        (None, None) => {
            let auth = Auth::from_request_parts(&mut parts, &state).await?;
            let audited = state
                .identity
                .at(auth.ctx.facts())
                .accept_invitation(
                    req.token.expose_secret(),
                    Acceptance::Existing(&auth.principal),
                )
                .await;
            (audited, auth.ctx)
        }
        (Some(_), None) => return Err(ApiError::invalid("password", "required with display_name")),
        (None, Some(_)) => return Err(ApiError::invalid("display_name", "required with password")),
        (Some(_), Some(_)) => {
            return Err(ApiError::invalid(
                "password",
                "a signed-in account accepts without a new password",
            ));
        }
    };
    let a = finish(&state, &ctx, audited).await?;
    let body = AcceptedOut {
        team_id: a.team.to_string(),
        account_id: a.account.to_string(),
        role: a.role,
        created_account: a.created_account,
    };
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

/// `POST /api/v1/teams/{id}/groups`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewGroup {
    name: String,
}

#[derive(Debug, Serialize)]
pub struct GroupOut {
    id: String,
    name: String,
    #[serde(with = "time::serde::rfc3339")]
    created_at: OffsetDateTime,
}

/// Creates a group.
pub async fn create_group(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<NewGroup>,
) -> Result<Response, ApiError> {
    let team: TeamId = parse_id("id", &id)?;
    let audited = state
        .identity
        .at(auth.ctx.facts())
        .create_group(&auth.principal, team, &req.name)
        .await;
    let group = finish(&state, &auth.ctx, audited).await?;
    Ok((
        StatusCode::CREATED,
        Json(serde_json::json!({ "id": group.to_string() })),
    )
        .into_response())
}

/// The team's groups.
pub async fn groups(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
) -> Result<Json<Vec<GroupOut>>, ApiError> {
    let team: TeamId = parse_id("id", &id)?;
    let audited = state
        .identity
        .at(auth.ctx.facts())
        .groups(&auth.principal, team)
        .await;
    let list = finish(&state, &auth.ctx, audited).await?;
    Ok(Json(
        list.into_iter()
            .map(|g| GroupOut {
                id: g.id.to_string(),
                name: g.name,
                created_at: g.created_at,
            })
            .collect(),
    ))
}

/// `PUT /api/v1/teams/{id}/groups/{group}/members/{account}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupMembership {
    member: bool,
}

/// Adds an account to a group, or removes it.
pub async fn set_group_member(
    State(state): State<AppState>,
    auth: Auth,
    Path((id, group, account)): Path<(String, String, String)>,
    ApiJson(req): ApiJson<GroupMembership>,
) -> Result<StatusCode, ApiError> {
    let team: TeamId = parse_id("id", &id)?;
    let group: GroupId = parse_id("group", &group)?;
    let account: AccountId = parse_id("account", &account)?;
    let audited = state
        .identity
        .at(auth.ctx.facts())
        .set_group_member(&auth.principal, team, group, account, req.member)
        .await;
    finish(&state, &auth.ctx, audited).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A role grant.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoleGrantBody {
    /// `account` or `group`.
    subject_kind: String,
    subject_id: String,
    role: TeamRole,
}

fn subject(kind: &str, id: &str) -> Result<GrantSubject, ApiError> {
    match kind {
        "account" => Ok(GrantSubject::Account(parse_id("subject_id", id)?)),
        "group" => Ok(GrantSubject::Group(parse_id("subject_id", id)?)),
        _ => Err(ApiError::invalid(
            "subject_kind",
            "must be account or group",
        )),
    }
}

/// Grants a team role to an account or group.
pub async fn grant_role(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<RoleGrantBody>,
) -> Result<StatusCode, ApiError> {
    let team: TeamId = parse_id("id", &id)?;
    let subject = subject(&req.subject_kind, &req.subject_id)?;
    let audited = state
        .identity
        .at(auth.ctx.facts())
        .grant_team_role(&auth.principal, team, subject, req.role)
        .await;
    finish(&state, &auth.ctx, audited).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Revokes a team role from an account or group.
pub async fn revoke_role(
    State(state): State<AppState>,
    auth: Auth,
    Path((id, kind, subject_id, role)): Path<(String, String, String, String)>,
) -> Result<StatusCode, ApiError> {
    let team: TeamId = parse_id("id", &id)?;
    let subject = subject(&kind, &subject_id)?;
    let role = TeamRole::parse(&role).ok_or_else(|| ApiError::invalid("role", "unknown role"))?;
    let audited = state
        .identity
        .at(auth.ctx.facts())
        .revoke_team_role(&auth.principal, team, subject, role)
        .await;
    finish(&state, &auth.ctx, audited).await?;
    Ok(StatusCode::NO_CONTENT)
}
