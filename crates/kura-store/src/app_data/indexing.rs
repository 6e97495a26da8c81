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

use std::cell::RefCell;
use std::collections::HashSet;

use parking_lot::{Mutex, RwLock};
use rusqlite::Connection;

use super::filter::{Cond, Filter, SortKey};
use super::{AppData, analyse, column_name, index_name, table_name};
use crate::StoreError;

/// A (table, column) pair.
type Column = (u32, u32);

/// Which columns get an index on first use, and which already have one.
#[derive(Debug, Default)]
pub(crate) struct AutoIndex {
    /// Columns whose index is made when a read first uses them.
    auto: RwLock<HashSet<Column>>,
    /// Columns found to lead an index.
    indexed: RwLock<HashSet<Column>>,
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
    /// have one, each returned once.
    fn claim(&self, used: &[Column]) -> Vec<Column> {
        let auto = self.auto.read();
        if auto.is_empty() {
            return Vec::new();
        }
        let indexed = self.indexed.read();
        let mut unknown = used
            .iter()
            .filter(|c| auto.contains(c) && !indexed.contains(c))
            .peekable();
        // Every find passes here: once its columns are known to be
        // indexed, it takes no lock but the two shared ones.
        if unknown.peek().is_none() {
            return Vec::new();
        }
        let mut started = self.started.lock();
        unknown.filter(|c| started.insert(**c)).copied().collect()
    }
}

/// The columns a read's filters and sorts could use an index for.
#[derive(Debug, Default)]
pub(crate) struct Usage(RefCell<Vec<Column>>);

impl Usage {
    /// Notes the columns of `filter` whose condition an index serves
    /// (comparisons, ranges, empty and duplicate checks; not word or
    /// wildcard matches, which compare a transformed value, nor anything
    /// under a negation).
    pub(crate) fn filter(&self, table: u32, filter: &Filter) {
        match filter {
            Filter::Col(col, cond) => {
                let indexable = !matches!(cond, Cond::WordGlob(_) | Cond::Glob(_));
                if indexable {
                    self.note(table, *col);
                }
            }
            Filter::And(parts) | Filter::Or(parts) => {
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
            self.note(table, k.col);
        }
    }

    fn note(&self, table: u32, col: u32) {
        let mut used = self.0.borrow_mut();
        if !used.contains(&(table, col)) {
            used.push((table, col));
        }
    }

    pub(crate) fn take(&self) -> Vec<Column> {
        self.0.take()
    }
}

impl AppData {
    /// Sets the columns (table id, column id) whose index is made the first
    /// time a find, sort or portal uses them. Replaces the previous set.
    pub fn index_on_first_use(&self, columns: impl IntoIterator<Item = (u32, u32)>) {
        *self.auto_index.auto.write() = columns.into_iter().collect();
    }

    /// Starts indexing, in the background, the columns a read used that
    /// should have an index and may not. A failure is logged: a missing
    /// index slows finds down but changes no answer.
    pub(crate) fn used(&self, used: Vec<Column>) {
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
