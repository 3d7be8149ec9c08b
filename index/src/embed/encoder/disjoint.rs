//! `DisjointOut`: one output buffer written by parallel tasks that each own separate
//! elements (blocks of a matmul's output, one head's columns of attention's output).

pub(crate) struct DisjointOut(*mut f32);

// SAFETY: the tasks sharing a `DisjointOut` write disjoint elements (each use site says
// which), and its creator waits for all of them before it touches the buffer again.
unsafe impl Sync for DisjointOut {}

impl DisjointOut {
    pub(crate) fn new(out: &mut [f32]) -> Self {
        Self(out.as_mut_ptr())
    }

    /// The element at `offset`.
    ///
    /// # Safety
    /// `offset` must be inside the buffer this was made from, and only the calling task
    /// may write the elements it reaches through the pointer.
    pub(crate) unsafe fn at(&self, offset: usize) -> *mut f32 {
        // SAFETY: per the function's contract, the offset is in bounds.
        unsafe { self.0.add(offset) }
    }
}
