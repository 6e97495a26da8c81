//! Indexes made when first needed, as FileMaker's "automatically create
//! indexes as needed" does.
//!
//! Every index costs each create and each edit of its column: its B-tree
//! page is changed, encrypted and written with the commit. So a field
//! keeps an index only when the schema asks for one (`Ddl::CreateIndex`)
//! or when a find, a sort or a portal first compares or orders by it. The
//! schema names the columns whose index is made on first use
//! ([`AppData::index_on_first_use`]); reads note the columns their filters
//! and sorts can use an index for ([`Usage`]), and after the read the
//! columns without one get it in the background: the read that noticed is
//! answered without waiting, and the index is built once, on the writer,
//! with the planner's statistics refreshed in the same transaction.
//!
//! A column that comes later in a declared index on several fields is
//! served by that index wherever its leading field is compared in the same
//! conjunction (a range on `age` and `active = 1` under an index on
//! `(age, active)`): such a use makes no index of its own, which every
//! create and edit would otherwise pay for. Used alone, or beside other
//! fields only, the column is indexed as any other.

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};

use parking_lot::{Mutex, RwLock};
use rusqlite::Connection;

use super::filter::{Cond, Filter, SortKey};
use super::{AppData, analyse, column_name, index_name, table_name};
use crate::StoreError;

/// A (table, column) pair.
type Column = (u32, u32);

/// A use of a column by one read: the column, and the other columns of its
/// table compared in the same conjunction (empty for a sort, or a
/// condition alone).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Use {
    column: Column,
    beside: Vec<u32>,
}

/// Which columns get an index on first use, and which already have one.
#[derive(Debug, Default)]
pub(crate) struct AutoIndex {
    /// Columns whose index is made when a read first uses them.
    auto: RwLock<HashSet<Column>>,
    /// Columns found to lead an index.
    indexed: RwLock<HashSet<Column>>,
    /// For each column that comes later in a declared index on several
    /// columns, the leading columns of those indexes.
    led_by: RwLock<HashMap<Column, Vec<u32>>>,
    /// Columns being looked at or indexed (or whose index failed; they are
    /// not retried until the schema changes or the app is opened again).
    started: Mutex<HashSet<Column>>,
}

impl AutoIndex {
    /// Forgets what was learnt about the file's indexes (after a schema
    /// change, which may drop or add some).
    pub(crate) fn forget(&self) {
        self.indexed.write().clear();
        self.started.lock().clear();
    }

    /// The used columns that should get an index and are not known to
    /// have one (nor served, in that use, by a declared index on several
    /// columns), each returned once.
    fn claim(&self, used: &[Use]) -> Vec<Column> {
        let auto = self.auto.read();
        if auto.is_empty() {
            return Vec::new();
        }
        let indexed = self.indexed.read();
        let led_by = self.led_by.read();
        let served = |u: &Use| {
            led_by
                .get(&u.column)
                .is_some_and(|leads| leads.iter().any(|l| u.beside.contains(l)))
        };
        let mut unknown = used
            .iter()
            .filter(|u| auto.contains(&u.column) && !indexed.contains(&u.column) && !served(u))
            .peekable();
        // Every find passes here: once its columns are known to be
        // indexed, it takes no lock but the shared ones.
        if unknown.peek().is_none() {
            return Vec::new();
        }
        let mut started = self.started.lock();
        unknown
            .map(|u| u.column)
            .filter(|c| started.insert(*c))
            .collect()
    }
}

/// The columns a read's filters and sorts could use an index for.
#[derive(Debug, Default)]
pub(crate) struct Usage(RefCell<Vec<Use>>);

/// The column a condition compares, if an index can serve it (comparisons,
/// ranges, empty and duplicate checks; not word or wildcard matches, which
/// compare a transformed value).
fn indexable(filter: &Filter) -> Option<u32> {
    match filter {
        Filter::Col(_, Cond::WordGlob(_) | Cond::Glob(_)) => None,
        Filter::Col(col, _) => Some(*col),
        _ => None,
    }
}

impl Usage {
    /// Notes the columns of `filter` whose condition an index serves (see
    /// [`indexable`]; nothing under a negation), each with the columns
    /// compared beside it in the same conjunction.
    pub(crate) fn filter(&self, table: u32, filter: &Filter) {
        match filter {
            Filter::Col(..) => {
                if let Some(col) = indexable(filter) {
                    self.note(table, col, &[]);
                }
            }
            Filter::And(parts) => {
                let beside: Vec<u32> = parts.iter().filter_map(indexable).collect();
                for p in parts {
                    match (indexable(p), p) {
                        // A duplicate check groups the whole table by the
                        // column, which only an index led by it serves.
                        (Some(col), Filter::Col(_, Cond::Duplicate)) => self.note(table, col, &[]),
                        (Some(col), _) => self.note(table, col, &beside),
                        (None, _) => self.filter(table, p),
                    }
                }
            }
            Filter::Or(parts) => {
                for p in parts {
                    self.filter(table, p);
                }
            }
            Filter::All
            | Filter::Nothing
            | Filter::Rid(_)
            | Filter::OwnedBy(_)
            | Filter::Not(_) => {}
        }
    }

    /// Notes the columns of a sort.
    pub(crate) fn sort(&self, table: u32, sort: &[SortKey]) {
        for k in sort {
            self.note(table, k.col, &[]);
        }
    }

    fn note(&self, table: u32, col: u32, beside: &[u32]) {
        let mut used = self.0.borrow_mut();
        let beside: Vec<u32> = beside.iter().copied().filter(|c| *c != col).collect();
        let u = Use {
            column: (table, col),
            beside,
        };
        if !used.contains(&u) {
            used.push(u);
        }
    }

    pub(crate) fn take(&self) -> Vec<Use> {
        self.0.take()
    }
}

impl AppData {
    /// Sets the columns (table id, column id) whose index is made the first
    /// time a find, sort or portal uses them, and the declared indexes on
    /// several columns (table id, column ids in index order), which serve
    /// their later columns beside the first. Replaces the previous sets.
    pub fn index_on_first_use(
        &self,
        columns: impl IntoIterator<Item = (u32, u32)>,
        composites: impl IntoIterator<Item = (u32, Vec<u32>)>,
    ) {
        let mut led_by: HashMap<Column, Vec<u32>> = HashMap::new();
        for (table, cols) in composites {
            if let Some((&first, rest)) = cols.split_first() {
                for &col in rest {
                    led_by.entry((table, col)).or_default().push(first);
                }
            }
        }
        *self.auto_index.led_by.write() = led_by;
        *self.auto_index.auto.write() = columns.into_iter().collect();
    }

    /// Starts indexing, in the background, the columns a read used that
    /// should have an index and may not. A failure is logged: a missing
    /// index slows finds down but changes no answer.
    pub(crate) fn used(&self, used: Vec<Use>) {
        if used.is_empty() {
            return;
        }
        let claimed = self.auto_index.claim(&used);
        if claimed.is_empty() {
            return;
        }
        let data = self.clone();
        tokio::spawn(async move {
            let wanted = claimed.clone();
            let built = async {
                let missing = data.pool.read(move |conn| unindexed(conn, &wanted)).await?;
                if !missing.is_empty() {
                    let build = missing.clone();
                    data.pool
                        .write(move |tx| {
                            for &(table, col) in &build {
                                tx.execute_batch(&format!(
                                    "CREATE INDEX IF NOT EXISTS {} ON {}({})",
                                    index_name(table, col),
                                    table_name(table),
                                    column_name(col)
                                ))?;
                            }
                            analyse(tx)
                        })
                        .await?;
                    tracing::info!(columns = ?missing, "indexed app columns on first use");
                }
                Ok::<_, StoreError>(())
            };
            match built.await {
                Ok(()) => {
                    data.auto_index
                        .indexed
                        .write()
                        .extend(claimed.iter().copied());
                    let mut started = data.auto_index.started.lock();
                    for c in &claimed {
                        started.remove(c);
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, columns = ?claimed, "indexing app columns failed");
                }
            }
        });
    }
}

/// Of `columns`, those that lead no index of their table (a column that
/// no longer exists is left out: there is nothing to index).
fn unindexed(conn: &Connection, columns: &[Column]) -> Result<Vec<Column>, StoreError> {
    let mut leads = conn.prepare(
        "SELECT EXISTS (SELECT 1 FROM pragma_index_list(?1) AS l, pragma_index_info(l.name) AS i
                        WHERE i.seqno = 0 AND i.name = ?2)",
    )?;
    let mut exists =
        conn.prepare("SELECT EXISTS (SELECT 1 FROM pragma_table_info(?1) WHERE name = ?2)")?;
    let mut out = Vec::new();
    for &(table, col) in columns {
        let (t, c) = (table_name(table), column_name(col));
        let present: bool = exists.query_row([&t, &c], |r| r.get(0))?;
        let indexed: bool = leads.query_row([&t, &c], |r| r.get(0))?;
        if present && !indexed {
            out.push((table, col));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::app_data::Cell;

    fn eq(col: u32) -> Filter {
        Filter::Col(col, Cond::Eq(Cell::Int(1)))
    }

    fn claims(filter: &Filter) -> Vec<Column> {
        let auto = AutoIndex::default();
        *auto.auto.write() = [(1, 1), (1, 2), (1, 3)].into_iter().collect();
        *auto.led_by.write() = [((1, 2), vec![1])].into_iter().collect();
        let usage = Usage::default();
        usage.filter(1, filter);
        let mut claimed = auto.claim(&usage.take());
        claimed.sort_unstable();
        claimed
    }

    #[test]
    fn a_later_column_of_a_declared_index_beside_its_first_needs_no_index() {
        // (1, 2) is declared: column 2 beside column 1 is served by it.
        assert_eq!(claims(&Filter::And(vec![eq(1), eq(2)])), [(1, 1)]);
        assert_eq!(
            claims(&Filter::And(vec![eq(2), eq(1), eq(3)])),
            [(1, 1), (1, 3)]
        );
        // Beside others only, alone, or under an `or` with it: indexed.
        assert_eq!(claims(&Filter::And(vec![eq(2), eq(3)])), [(1, 2), (1, 3)]);
        assert_eq!(claims(&eq(2)), [(1, 2)]);
        assert_eq!(claims(&Filter::Or(vec![eq(1), eq(2)])), [(1, 1), (1, 2)]);
        // A wildcard on column 1 cannot use the index, so it serves nothing.
        let glob = Filter::Col(1, Cond::Glob("a*".into()));
        assert_eq!(claims(&Filter::And(vec![glob, eq(2)])), [(1, 2)]);
        // A duplicate check groups the whole table by its column.
        let dup = Filter::Col(2, Cond::Duplicate);
        assert_eq!(claims(&Filter::And(vec![eq(1), dup])), [(1, 1), (1, 2)]);
        // A conjunction inside an `or` is its own group.
        let nested = Filter::Or(vec![Filter::And(vec![eq(1), eq(2)]), eq(3)]);
        assert_eq!(claims(&nested), [(1, 1), (1, 3)]);
    }
}
