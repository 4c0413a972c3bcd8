//! Vectors of documents already dropped, kept on their thread for the next builder.
//!
//! A review's document is built and dropped once per request. Fresh vectors each time take
//! mimalloc's slow path (a size class with one block in circulation finds its page's free list
//! empty on every allocation) and write to cold cache lines; the vectors of the last documents
//! dropped on this thread, emptied, cost neither. Two documents' vectors are kept per thread
//! (an UPDATE review has two objects) and one builder's stacks, none larger than
//! `MAX_KEPT_NODES`, so a large document's memory is returned, not pinned.

use std::borrow::Cow;
use std::cell::RefCell;

use super::{NodeId, Slot};

pub(super) type Member<'t> = (Cow<'t, str>, NodeId);

/// Above this many entries a vector is freed rather than kept (32 bytes a node or member).
const MAX_KEPT_NODES: usize = 4096;

/// A document's vectors, empty, with their capacity.
#[derive(Default)]
pub(super) struct DocumentVectors {
    pub slots: Vec<Slot<'static>>,
    pub members: Vec<Member<'static>>,
    pub items: Vec<NodeId>,
}

/// A builder's stacks of open objects' members and open arrays' items, empty.
#[derive(Default)]
pub(super) struct Stacks {
    pub open_members: Vec<Member<'static>>,
    pub open_items: Vec<NodeId>,
}

impl DocumentVectors {
    const EMPTY: Self = Self {
        slots: Vec::new(),
        members: Vec::new(),
        items: Vec::new(),
    };

    fn is_unallocated(&self) -> bool {
        self.slots.capacity() == 0
    }

    fn worth_keeping(&self) -> bool {
        small(self.slots.capacity())
            && small(self.members.capacity())
            && small(self.items.capacity())
    }
}

fn small(capacity: usize) -> bool {
    capacity <= MAX_KEPT_NODES
}

thread_local! {
    static DOCUMENTS: RefCell<[DocumentVectors; 2]> =
        const { RefCell::new([DocumentVectors::EMPTY, DocumentVectors::EMPTY]) };
    static STACKS: RefCell<Stacks> = const {
        RefCell::new(Stacks { open_members: Vec::new(), open_items: Vec::new() })
    };
}

/// Kept document vectors if this thread has some, else unallocated ones.
pub(super) fn take_document() -> DocumentVectors {
    DOCUMENTS
        .try_with(|kept| {
            let mut kept = kept.try_borrow_mut().ok()?;
            kept.iter_mut()
                .find(|vectors| !vectors.is_unallocated())
                .map(std::mem::take)
        })
        .ok()
        .flatten()
        .unwrap_or_default()
}

/// Keeps a dropped document's vectors, emptied, for a later builder on this thread if there is
/// room and they are not too large; frees them otherwise. (During thread teardown they are
/// simply freed.)
pub(super) fn keep_document(
    slots: Vec<Slot<'_>>,
    members: Vec<Member<'_>>,
    mut items: Vec<NodeId>,
) {
    if slots.capacity() == 0 {
        return;
    }
    items.clear();
    let vectors = DocumentVectors {
        slots: emptied_slots(slots),
        members: emptied_members(members),
        items,
    };
    if !vectors.worth_keeping() {
        return;
    }
    let _ = DOCUMENTS.try_with(|kept| {
        if let Ok(mut kept) = kept.try_borrow_mut()
            && let Some(free) = kept.iter_mut().find(|kept| kept.is_unallocated())
        {
            *free = vectors;
        }
    });
}

pub(super) fn take_stacks() -> Stacks {
    STACKS
        .try_with(|kept| {
            kept.try_borrow_mut()
                .map(|mut kept| std::mem::take(&mut *kept))
        })
        .ok()
        .and_then(Result::ok)
        .unwrap_or_default()
}

/// Keeps a builder's stacks, emptied, for the next builder on this thread unless too large.
pub(super) fn keep_stacks(open_members: Vec<Member<'_>>, mut open_items: Vec<NodeId>) {
    if !(small(open_members.capacity()) && small(open_items.capacity())) {
        return;
    }
    open_items.clear();
    let stacks = Stacks {
        open_members: emptied_members(open_members),
        open_items,
    };
    let _ = STACKS.try_with(|kept| {
        if let Ok(mut kept) = kept.try_borrow_mut() {
            *kept = stacks;
        }
    });
}

/// `slots`, emptied, as a vector of any lifetime: the same allocation (collecting an empty
/// `vec::IntoIter` into a vector of a same-sized type reuses its buffer).
fn emptied_slots(mut slots: Vec<Slot<'_>>) -> Vec<Slot<'static>> {
    slots.clear();
    slots.into_iter().map(|_| Slot::Null).collect()
}

fn emptied_members(mut members: Vec<Member<'_>>) -> Vec<Member<'static>> {
    members.clear();
    members
        .into_iter()
        .map(|(_, id)| (Cow::Borrowed(""), id))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emptied_vectors_keep_their_allocation() {
        let text = String::from("borrowed");
        let mut slots = Vec::with_capacity(100);
        slots.push(Slot::String(Cow::Borrowed(text.as_str())));
        let mut members = Vec::with_capacity(50);
        members.push((Cow::Borrowed(text.as_str()), 0));
        let (slots_at, members_at) = (slots.as_ptr() as usize, members.as_ptr() as usize);
        let slots = emptied_slots(slots);
        let members = emptied_members(members);
        assert!(slots.is_empty() && members.is_empty());
        assert_eq!((slots.capacity(), members.capacity()), (100, 50));
        assert_eq!(slots.as_ptr() as usize, slots_at);
        assert_eq!(members.as_ptr() as usize, members_at);
    }

    #[test]
    fn a_thread_keeps_two_documents_and_no_large_ones() {
        std::thread::spawn(|| {
            let keep = |nodes: usize| {
                keep_document(
                    Vec::with_capacity(nodes),
                    Vec::with_capacity(nodes),
                    Vec::new(),
                )
            };
            keep(10);
            keep(20);
            keep(30);
            keep(MAX_KEPT_NODES + 1);
            let mut taken: Vec<usize> = (0..3).map(|_| take_document().slots.capacity()).collect();
            taken.sort();
            assert_eq!(taken, [0, 10, 20]);
        })
        .join()
        .map_err(|_| "the test thread panicked")
        .unwrap_or_else(|e| panic!("{e}"));
    }
}
