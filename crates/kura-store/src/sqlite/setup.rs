//! First-run setup as one transaction: the setup token, the first
//! operator, the "setup complete" mark and its first session.

use rusqlite::Transaction;

use super::identity::{insert_account, insert_session_row, ts};
use super::platform::{consume_setup_token, put_setting, setting_in, setup_token_verdict};
use crate::identity::{FirstOperator, FirstOperatorOutcome};
use crate::{SETUP_COMPLETED, SetupTokenCheck, StoreError};

/// Creates the first operator in `tx` unless setup is complete or the token
/// is not valid; every refusal comes before the first write.
pub(super) fn create_first_operator(
    tx: &Transaction<'_>,
    first: &FirstOperator,
) -> Result<FirstOperatorOutcome, StoreError> {
    // Any account of the new one's kind (the domain's `operator`) means
    // setup already happened.
    let operators: i64 = tx.query_row(
        "SELECT count(*) FROM accounts WHERE kind = ?1",
        [&first.account.account.kind],
        |r| r.get(0),
    )?;
    if operators > 0 || setting_in(tx, SETUP_COMPLETED)?.is_some() {
        return Ok(FirstOperatorOutcome::AlreadyComplete);
    }
    let hash = first.setup_token.as_str();
    let verdict = setup_token_verdict(tx, hash, first.now)?;
    if verdict != SetupTokenCheck::Valid {
        return Ok(FirstOperatorOutcome::Token(verdict));
    }
    consume_setup_token(tx, hash, first.now)?;
    insert_account(tx, &first.account)?;
    put_setting(tx, SETUP_COMPLETED, &ts(first.now).to_string(), first.now)?;
    insert_session_row(tx, &first.session)?;
    Ok(FirstOperatorOutcome::Created)
}
