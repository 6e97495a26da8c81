//! A rendered record, written straight to JSON.
//!
//! A record is serialised as it is rendered: field names borrowed from the
//! schema, values taken from the row, in the layout's field order (as
//! FileMaker answers). Building a `serde_json::Value` first would copy
//! every name and value into a sorted map only to write it out again.

use serde::ser::{Serialize, SerializeMap, Serializer};

use crate::error::FmError;
use crate::value::Wire;

/// One record of a layout with its portals.
#[derive(Debug)]
pub struct Record<'s> {
    pub(super) rid: i64,
    pub(super) modid: i64,
    pub(super) fields: Vec<(&'s str, Wire)>,
    pub(super) portals: Vec<PortalRows<'s>>,
}

/// The related records one portal shows.
#[derive(Debug)]
pub(super) struct PortalRows<'s> {
    pub(super) name: &'s str,
    pub(super) table: &'s str,
    pub(super) found: u64,
    pub(super) rows: Vec<PortalRow<'s>>,
}

/// One related record in a portal; its fields are written `table::field`
/// with the portal's table.
#[derive(Debug)]
pub(super) struct PortalRow<'s> {
    pub(super) rid: i64,
    pub(super) modid: i64,
    pub(super) fields: Vec<(&'s str, Wire)>,
}

impl Record<'_> {
    /// The record as JSON text, for answers assembled after the read that
    /// rendered it has ended.
    pub fn to_raw(&self) -> Result<Box<serde_json::value::RawValue>, FmError> {
        serde_json::value::to_raw_value(self).map_err(|e| {
            FmError::broken(format_args!("a record could not be written as JSON: {e}"))
        })
    }
}

/// A list of (name, value) written as a JSON object in its order.
struct Fields<'a, 's>(&'a [(&'s str, Wire)]);

impl Serialize for Fields<'_, '_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.0.len()))?;
        for (name, value) in self.0 {
            map.serialize_entry(name, value)?;
        }
        map.end()
    }
}

/// A number written as a JSON string (FileMaker's `recordId`, `modId`).
struct Quoted(i64);

impl Serialize for Quoted {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&self.0)
    }
}

impl Serialize for Record<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(None)?;
        map.serialize_entry("fieldData", &Fields(&self.fields))?;
        map.serialize_entry("portalData", &PortalData(&self.portals))?;
        map.serialize_entry("recordId", &Quoted(self.rid))?;
        map.serialize_entry("modId", &Quoted(self.modid))?;
        if !self.portals.is_empty() {
            map.serialize_entry("portalDataInfo", &PortalInfo(&self.portals))?;
        }
        map.end()
    }
}

struct PortalData<'a, 's>(&'a [PortalRows<'s>]);

impl Serialize for PortalData<'_, '_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.0.len()))?;
        for p in self.0 {
            map.serialize_entry(p.name, &Related(p))?;
        }
        map.end()
    }
}

struct PortalInfo<'a, 's>(&'a [PortalRows<'s>]);

impl Serialize for PortalInfo<'_, '_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.iter().map(|p| {
            serde_json::json!({
                "portalObjectName": p.name,
                "database": "",
                "table": p.table,
                "foundCount": p.found,
                "returnedCount": p.rows.len(),
            })
        }))
    }
}

/// A portal field's key, `table::field`.
struct Qualified<'s>(&'s str, &'s str);

impl Serialize for Qualified<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&format_args!("{}::{}", self.0, self.1))
    }
}

/// A portal's rows, each with its fields qualified by the portal's table.
struct Related<'a, 's>(&'a PortalRows<'s>);

impl Serialize for Related<'_, '_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let table = self.0.table;
        s.collect_seq(self.0.rows.iter().map(|row| QualifiedRow(table, row)))
    }
}

struct QualifiedRow<'a, 's>(&'s str, &'a PortalRow<'s>);

impl Serialize for QualifiedRow<'_, '_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let Self(table, row) = self;
        let mut map = s.serialize_map(Some(row.fields.len() + 2))?;
        map.serialize_entry("recordId", &Quoted(row.rid))?;
        for (name, value) in &row.fields {
            map.serialize_entry(&Qualified(table, name), value)?;
        }
        map.serialize_entry("modId", &Quoted(row.modid))?;
        map.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_are_written_in_layout_order_with_quoted_ids_and_portals() {
        let bare = Record {
            rid: 7,
            modid: 2,
            fields: vec![
                ("zeta", Wire::Text("z".into())),
                ("alpha", Wire::Int(1)),
                ("mid", Wire::Real(2.5)),
            ],
            portals: Vec::new(),
        };
        assert_eq!(
            serde_json::to_string(&bare).unwrap(),
            r#"{"fieldData":{"zeta":"z","alpha":1,"mid":2.5},"portalData":{},"recordId":"7","modId":"2"}"#
        );
        assert_eq!(
            bare.to_raw().unwrap().get(),
            serde_json::to_string(&bare).unwrap()
        );

        let with_portal = Record {
            portals: vec![PortalRows {
                name: "orders",
                table: "Order",
                found: 3,
                rows: vec![PortalRow {
                    rid: 11,
                    modid: 0,
                    fields: vec![
                        ("total", Wire::Int(40)),
                        ("note", Wire::Text("\"x\"".into())),
                    ],
                }],
            }],
            ..bare
        };
        assert_eq!(
            serde_json::to_string(&with_portal).unwrap(),
            concat!(
                r#"{"fieldData":{"zeta":"z","alpha":1,"mid":2.5},"#,
                r#""portalData":{"orders":[{"recordId":"11","Order::total":40,"Order::note":"\"x\"","modId":"0"}]},"#,
                r#""recordId":"7","modId":"2","#,
                r#""portalDataInfo":[{"database":"","foundCount":3,"portalObjectName":"orders","returnedCount":1,"table":"Order"}]}"#
            )
        );
    }
}
