//! Structured record filters, compiled to parameterised SQL.
//!
//! `kura-apps` turns FileMaker find requests into a [`Filter`]; this module
//! turns the filter into a `WHERE` clause whose every value is a bound
//! parameter. Column names come only from numeric ids, so no user text ever
//! becomes SQL.

use super::{Cell, column_name, table_name};

/// A condition on one column.
#[derive(Debug, Clone, PartialEq)]
pub enum Cond {
    /// Equal (text compares case-insensitively).
    Eq(Cell),
    /// Less than.
    Lt(Cell),
    /// Less than or equal.
    Le(Cell),
    /// Greater than.
    Gt(Cell),
    /// Greater than or equal.
    Ge(Cell),
    /// Inclusive range.
    Between(Cell, Cell),
    /// Some word of the value matches this GLOB pattern (lower-cased,
    /// already escaped by the caller), e.g. `smi*` for "a word starting
    /// with smi".
    WordGlob(String),
    /// The whole value matches this GLOB pattern (lower-cased, escaped).
    Glob(String),
    /// No value.
    Empty,
    /// Any value.
    NotEmpty,
    /// The value occurs in more than one record of the table.
    Duplicate,
}

/// A tree of conditions.
#[derive(Debug, Clone, PartialEq)]
pub enum Filter {
    /// Every record.
    All,
    /// No record.
    Nothing,
    /// The record with this id.
    Rid(i64),
    /// The record's owner (the account that created it) is this name.
    OwnedBy(String),
    /// One column's condition.
    Col(u32, Cond),
    /// Every part holds.
    And(Vec<Filter>),
    /// Some part holds.
    Or(Vec<Filter>),
    /// The part does not hold.
    Not(Box<Filter>),
}

/// One sort key: a column and its direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SortKey {
    /// The column id.
    pub col: u32,
    /// Descending when true.
    pub descending: bool,
}

/// Compiles `filter` for table `table` into SQL text and its parameters.
pub(crate) fn compile(table: u32, filter: &Filter, params: &mut Vec<Cell>) -> String {
    match filter {
        Filter::All => "1".into(),
        Filter::Nothing => "0".into(),
        Filter::Rid(rid) => {
            params.push(Cell::Int(*rid));
            format!("rid = ?{}", params.len())
        }
        Filter::OwnedBy(name) => {
            params.push(Cell::Text(name.clone()));
            format!("owner = ?{} COLLATE NOCASE", params.len())
        }
        Filter::Col(col, cond) => compile_cond(table, *col, cond, params),
        Filter::And(parts) => join(table, parts, " AND ", "1", params),
        Filter::Or(parts) => join(table, parts, " OR ", "0", params),
        Filter::Not(part) => format!("NOT ({})", compile(table, part, params)),
    }
}

fn join(table: u32, parts: &[Filter], op: &str, empty: &str, params: &mut Vec<Cell>) -> String {
    if parts.is_empty() {
        return empty.into();
    }
    let sql: Vec<String> = parts
        .iter()
        .map(|p| format!("({})", compile(table, p, params)))
        .collect();
    sql.join(op)
}

fn compile_cond(table: u32, col: u32, cond: &Cond, params: &mut Vec<Cell>) -> String {
    let c = column_name(col);
    let mut bind = |v: &Cell| {
        params.push(v.clone());
        format!("?{}", params.len())
    };
    match cond {
        Cond::Eq(v) => format!("{c} = {}", bind(v)),
        Cond::Lt(v) => format!("{c} < {}", bind(v)),
        Cond::Le(v) => format!("{c} <= {}", bind(v)),
        Cond::Gt(v) => format!("{c} > {}", bind(v)),
        Cond::Ge(v) => format!("{c} >= {}", bind(v)),
        Cond::Between(a, b) => {
            let (a, b) = (bind(a), bind(b));
            format!("{c} BETWEEN {a} AND {b}")
        }
        Cond::WordGlob(p) => {
            // Words are separated by whitespace and common punctuation;
            // prefixing a space makes "starts a word" one GLOB.
            let p = bind(&Cell::Text(format!("* {p}")));
            format!(
                "(' ' || replace(replace(replace(replace(lower({c}), char(10), ' '), ',', ' '), '-', ' '), '.', ' ')) GLOB {p}"
            )
        }
        Cond::Glob(p) => format!("lower({c}) GLOB {}", bind(&Cell::Text(p.clone()))),
        Cond::Empty => format!("{c} IS NULL"),
        Cond::NotEmpty => format!("{c} IS NOT NULL"),
        Cond::Duplicate => format!(
            "{c} IN (SELECT {c} FROM {t} WHERE {c} IS NOT NULL GROUP BY {c} HAVING count(*) > 1)",
            t = table_name(table)
        ),
    }
}

/// Escapes GLOB metacharacters in literal text so it matches itself.
pub fn glob_literal(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for ch in text.chars() {
        match ch {
            '*' | '?' | '[' | ']' => {
                out.push('[');
                out.push(ch);
                out.push(']');
            }
            _ => out.push(ch),
        }
    }
    out
}
