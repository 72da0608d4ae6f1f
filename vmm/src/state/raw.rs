//! The raw blocks of a VM's state: KVM's own structures, byte for byte, in a fixed
//! order, carried in the state's MessagePack as binaries (see [`RawBlock`]), and the
//! checked reader that takes them apart again.

use zerocopy::{FromBytes, Immutable, IntoBytes};

/// A block of KVM structures laid out as KVM's own bytes (little-endian, in a fixed
/// order, lists behind a `u32` count), carried in the state as one MessagePack
/// binary. The vCPU and KVM blocks are nearly all of a state's bytes: a stop-and-copy
/// meets their encoder and decoder with cold caches, and a generic serde pass over
/// them took 35-55 us each way in the downtime; copying bytes takes a few. The
/// structures are fixed by KVM's ABI, and the state's version guards the order.
pub trait RawBlock: Sized {
    /// Appends this block's bytes.
    fn put(&self, out: &mut Vec<u8>);
    /// Reads one block, refusing short input with what was missing.
    fn take(r: &mut Reader<'_>) -> Result<Self, String>;
}

/// Appends one plain structure's bytes.
pub fn put<T: IntoBytes + Immutable>(out: &mut Vec<u8>, v: &T) {
    out.extend_from_slice(v.as_bytes());
}

/// Appends a `u32` count, then that many plain structures ([`Reader::list`]).
pub fn put_list<T: IntoBytes + Immutable>(out: &mut Vec<u8>, items: &[T]) {
    put(out, &(items.len() as u32));
    for item in items {
        put(out, item);
    }
}

/// Reads [`RawBlock`]s from a byte slice, checking every length.
pub struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    /// A reader of `bytes`.
    pub fn new(bytes: &'a [u8]) -> Self {
        Reader(bytes)
    }

    /// One plain structure (`what` names it in the error).
    pub fn block<T: FromBytes>(&mut self, what: &str) -> Result<T, String> {
        let n = std::mem::size_of::<T>();
        if self.0.len() < n {
            return Err(format!("{what}: {n} bytes needed, {} left", self.0.len()));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        T::read_from_bytes(head).map_err(|_| format!("{what}: {n} bytes do not fit"))
    }

    /// A `u32` count, then that many plain structures ([`put_list`]). A count beyond
    /// the bytes left is corrupt, and refused before anything is allocated for it.
    pub fn list<T: FromBytes>(&mut self, what: &str) -> Result<Vec<T>, String> {
        let n: u32 = self.block(what)?;
        let need = (n as usize).saturating_mul(std::mem::size_of::<T>());
        if need > self.left() {
            return Err(format!("{n} of {what} in {} bytes", self.left()));
        }
        (0..n).map(|_| self.block(what)).collect()
    }

    /// Bytes not read yet.
    pub fn left(&self) -> usize {
        self.0.len()
    }
}

/// Serde `with` module for [`RawBlock`]s (`#[serde(with = "raw::blocks")]`).
pub mod blocks {
    use std::marker::PhantomData;

    use serde::de::Visitor;
    use serde::{Deserializer, Serializer};

    use crate::state::raw::{RawBlock, Reader};

    pub fn serialize<T: RawBlock, S: Serializer>(value: &T, s: S) -> Result<S::Ok, S::Error> {
        let mut out = Vec::with_capacity(16 << 10);
        value.put(&mut out);
        s.serialize_bytes(&out)
    }

    pub fn deserialize<'de, T: RawBlock, D: Deserializer<'de>>(d: D) -> Result<T, D::Error> {
        struct Block<T>(PhantomData<T>);
        impl<T: RawBlock> Visitor<'_> for Block<T> {
            type Value = T;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a binary block of KVM structures")
            }
            fn visit_bytes<E: serde::de::Error>(self, bytes: &[u8]) -> Result<T, E> {
                let mut r = Reader(bytes);
                let v = T::take(&mut r).map_err(E::custom)?;
                match r.left() {
                    0 => Ok(v),
                    n => Err(E::custom(format!("{n} bytes after the last structure"))),
                }
            }
        }
        d.deserialize_bytes(Block(PhantomData))
    }
}

impl<T: RawBlock> RawBlock for Vec<T> {
    fn put(&self, out: &mut Vec<u8>) {
        put(out, &(self.len() as u32));
        for item in self {
            item.put(out);
        }
    }

    fn take(r: &mut Reader<'_>) -> Result<Self, String> {
        let n: u32 = r.block("count")?;
        // Each item takes at least one byte: a count beyond what is left is corrupt,
        // and is refused before anything is allocated for it.
        if n as usize > r.left() {
            return Err(format!("{n} items in {} bytes", r.left()));
        }
        (0..n).map(|_| T::take(r)).collect()
    }
}
