//! The row-change messages of the `pgoutput` logical decoding plugin
//! (protocol version 1, text values): `Relation`, `Insert`, `Update`,
//! `Delete`, `Truncate`. Transaction boundaries and logical messages are
//! decoded by `pgwire-replication` already.
//!
//! Reference: PostgreSQL, "Logical Replication Message Formats".

use anyhow::{Context as _, bail};
use std::collections::HashMap;

/// A table as a `Relation` message describes it.
#[derive(Debug, Clone)]
pub struct Relation {
    pub schema: String,
    pub name: String,
    pub columns: Vec<Column>,
}

impl Relation {
    /// `schema.name`.
    pub fn qualified(&self) -> String {
        format!("{}.{}", self.schema, self.name)
    }
}

#[derive(Debug, Clone)]
pub struct Column {
    pub name: String,
    /// Part of the replica identity (the primary key by default).
    pub key: bool,
    pub type_oid: u32,
}

/// One column value of a tuple.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    Null,
    /// A TOASTed value that did not change (not sent).
    UnchangedToast,
    /// The type's text output.
    Text(String),
}

/// A decoded change.
#[derive(Debug)]
pub enum Change {
    Insert {
        relation: u32,
        new: Vec<Value>,
    },
    Update {
        relation: u32,
        /// The old row (REPLICA IDENTITY FULL) or its key, when sent.
        old: Option<Vec<Value>>,
        new: Vec<Value>,
    },
    Delete {
        relation: u32,
        old: Vec<Value>,
    },
    Truncate {
        relations: Vec<u32>,
    },
}

/// What a message means to the source.
#[derive(Debug)]
pub enum Decoded {
    Change(Change),
    /// Relation (cached), Type, Origin: nothing to emit.
    Nothing,
}

/// Decodes messages, keeping the relations they refer to.
#[derive(Debug, Default)]
pub struct Decoder {
    relations: HashMap<u32, Relation>,
}

impl Decoder {
    pub fn relation(&self, oid: u32) -> anyhow::Result<&Relation> {
        self.relations
            .get(&oid)
            .with_context(|| format!("a change refers to relation {oid}, which was not described"))
    }

    pub fn decode(&mut self, data: &[u8]) -> anyhow::Result<Decoded> {
        let mut reader = Reader { data };
        let tag = reader.u8()?;
        Ok(match tag {
            b'R' => {
                let oid = reader.u32()?;
                let schema = reader.cstr()?;
                let name = reader.cstr()?;
                let _replica_identity = reader.u8()?;
                let count = reader.i16()?;
                let mut columns = Vec::with_capacity(count.max(0) as usize);
                for _ in 0..count {
                    let flags = reader.u8()?;
                    let name = reader.cstr()?;
                    let type_oid = reader.u32()?;
                    let _type_modifier = reader.i32()?;
                    columns.push(Column {
                        name,
                        key: flags & 1 == 1,
                        type_oid,
                    });
                }
                self.relations.insert(
                    oid,
                    Relation {
                        schema,
                        name,
                        columns,
                    },
                );
                Decoded::Nothing
            }
            b'I' => {
                let relation = reader.u32()?;
                reader.expect(b'N')?;
                Decoded::Change(Change::Insert {
                    relation,
                    new: reader.tuple()?,
                })
            }
            b'U' => {
                let relation = reader.u32()?;
                let mut old = None;
                let mut marker = reader.u8()?;
                if marker == b'K' || marker == b'O' {
                    old = Some(reader.tuple()?);
                    marker = reader.u8()?;
                }
                if marker != b'N' {
                    bail!(
                        "an Update message has {:?} where the new tuple should start",
                        marker as char
                    );
                }
                Decoded::Change(Change::Update {
                    relation,
                    old,
                    new: reader.tuple()?,
                })
            }
            b'D' => {
                let relation = reader.u32()?;
                let marker = reader.u8()?;
                if marker != b'K' && marker != b'O' {
                    bail!(
                        "a Delete message has {:?} where the old tuple should start",
                        marker as char
                    );
                }
                Decoded::Change(Change::Delete {
                    relation,
                    old: reader.tuple()?,
                })
            }
            b'T' => {
                let count = reader.u32()?;
                let _options = reader.u8()?;
                let relations = (0..count)
                    .map(|_| reader.u32())
                    .collect::<anyhow::Result<_>>()?;
                Decoded::Change(Change::Truncate { relations })
            }
            b'Y' | b'O' => Decoded::Nothing,
            other => bail!("unexpected pgoutput message {:?}", other as char),
        })
    }
}

struct Reader<'a> {
    data: &'a [u8],
}

impl Reader<'_> {
    fn take(&mut self, n: usize) -> anyhow::Result<&[u8]> {
        if self.data.len() < n {
            bail!("a pgoutput message ends early");
        }
        let (head, rest) = self.data.split_at(n);
        self.data = rest;
        Ok(head)
    }

    fn u8(&mut self) -> anyhow::Result<u8> {
        Ok(self.take(1)?[0])
    }

    fn expect(&mut self, byte: u8) -> anyhow::Result<()> {
        let found = self.u8()?;
        if found != byte {
            bail!(
                "expected {:?} in a pgoutput message, found {:?}",
                byte as char,
                found as char
            );
        }
        Ok(())
    }

    fn i16(&mut self) -> anyhow::Result<i16> {
        Ok(i16::from_be_bytes(self.take(2)?.try_into()?))
    }

    fn i32(&mut self) -> anyhow::Result<i32> {
        Ok(i32::from_be_bytes(self.take(4)?.try_into()?))
    }

    fn u32(&mut self) -> anyhow::Result<u32> {
        Ok(u32::from_be_bytes(self.take(4)?.try_into()?))
    }

    fn cstr(&mut self) -> anyhow::Result<String> {
        let end = self
            .data
            .iter()
            .position(|b| *b == 0)
            .context("a pgoutput string has no terminator")?;
        let text = String::from_utf8(self.data[..end].to_vec())?;
        self.data = &self.data[end + 1..];
        Ok(text)
    }

    fn tuple(&mut self) -> anyhow::Result<Vec<Value>> {
        let count = self.i16()?;
        let mut values = Vec::with_capacity(count.max(0) as usize);
        for _ in 0..count {
            values.push(match self.u8()? {
                b'n' => Value::Null,
                b'u' => Value::UnchangedToast,
                b't' => {
                    let length = self.i32()?;
                    let bytes = self.take(length.max(0) as usize)?;
                    Value::Text(
                        String::from_utf8(bytes.to_vec()).context("a text value is not UTF-8")?,
                    )
                }
                other => bail!(
                    "a column value of kind {:?} (binary values are not requested)",
                    other as char
                ),
            });
        }
        Ok(values)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn relation_message() -> Vec<u8> {
        let mut m = vec![b'R'];
        m.extend(16384u32.to_be_bytes());
        m.extend(b"public\0outbox\0");
        m.push(b'd');
        m.extend(2i16.to_be_bytes());
        m.push(1);
        m.extend(b"id\0");
        m.extend(2950u32.to_be_bytes());
        m.extend((-1i32).to_be_bytes());
        m.push(0);
        m.extend(b"payload\0");
        m.extend(3802u32.to_be_bytes());
        m.extend((-1i32).to_be_bytes());
        m
    }

    #[test]
    fn relations_and_changes_decode() {
        let mut decoder = Decoder::default();
        assert!(matches!(
            decoder.decode(&relation_message()).unwrap(),
            Decoded::Nothing
        ));
        let relation = decoder.relation(16384).unwrap();
        assert_eq!(relation.qualified(), "public.outbox");
        assert!(relation.columns[0].key && !relation.columns[1].key);

        let mut insert = vec![b'I'];
        insert.extend(16384u32.to_be_bytes());
        insert.push(b'N');
        insert.extend(2i16.to_be_bytes());
        insert.push(b't');
        insert.extend(3i32.to_be_bytes());
        insert.extend(b"abc");
        insert.push(b'n');
        let Decoded::Change(Change::Insert { relation, new }) = decoder.decode(&insert).unwrap()
        else {
            panic!("not an insert");
        };
        assert_eq!(relation, 16384);
        assert_eq!(new, [Value::Text("abc".into()), Value::Null]);

        let mut update = vec![b'U'];
        update.extend(16384u32.to_be_bytes());
        update.push(b'N');
        update.extend(2i16.to_be_bytes());
        update.push(b't');
        update.extend(1i32.to_be_bytes());
        update.push(b'x');
        update.push(b'u');
        let Decoded::Change(Change::Update { old, new, .. }) = decoder.decode(&update).unwrap()
        else {
            panic!("not an update");
        };
        assert!(old.is_none());
        assert_eq!(new[1], Value::UnchangedToast);
    }

    #[test]
    fn a_truncated_message_is_an_error() {
        let mut decoder = Decoder::default();
        let message = relation_message();
        assert!(decoder.decode(&message[..10]).is_err());
    }
}
