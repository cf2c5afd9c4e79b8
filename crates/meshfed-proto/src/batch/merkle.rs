//! Merkle trees in the style of RFC 6962 (Certificate Transparency), over SHA-384.
//!
//! Generic over leaf bytes: batch signatures use it for envelopes, and the audit log can use it
//! for its records. Nothing here knows what a leaf means; callers domain-separate their leaves.
//!
//! - leaf hash: `SHA-384(0x00 ‖ leaf)`;
//! - node hash: `SHA-384(0x01 ‖ left ‖ right)`;
//! - the root of `n > 1` leaves splits them at `k`, the largest power of two below `n`:
//!   `MTH(D[0:n]) = node(MTH(D[0:k]), MTH(D[k:n]))`; the root of one leaf is its leaf hash; the
//!   root of no leaves is `SHA-384()` of nothing.
//!
//! That split is the same tree as building level by level, pairing neighbours from the left and
//! moving a last node without a partner up unchanged. This module builds it that way (no
//! recursion); its tests check it against the RFC's recursive definition.
//!
//! An [`InclusionProof`] (RFC 6962's "audit path") lists, bottom up, the sibling of every node on
//! the way from a leaf to the root, skipping the levels where that node has no sibling. Its shape
//! is fixed by the leaf's index and the tree size, so a proof is checked for shape when it is
//! made and for content when it is verified.
//!
//! A [`ConsistencyProof`] (RFC 9162 §2.1.4) shows that the tree of the first `m` leaves is a
//! prefix of the tree of `n` leaves: an append-only log hands it out so that whoever holds an
//! older signed root can check that nothing before it was rewritten. [`Frontier`] keeps only
//! the roots of the perfect subtrees of a growing tree, to compute its root at every size while
//! streaming over millions of leaves.
//!
//! A root alone does not say how many leaves its tree has (the path of leaf 0 of 6 leaves also
//! leads to the same root when read as leaf 0 of 7): trust the pair (root, size) together, as a
//! signed tree head or a batch signature does.

use std::fmt;

use aws_lc_rs::digest::{Context, SHA384};

use crate::crypto::DIGEST_LEN;

/// Length of a tree hash (SHA-384).
pub const HASH_LEN: usize = DIGEST_LEN;

const LEAF_PREFIX: u8 = 0x00;
const NODE_PREFIX: u8 = 0x01;

/// A node of a Merkle tree: a leaf hash, an inner node or a root.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TreeHash([u8; HASH_LEN]);

impl TreeHash {
    /// A tree hash from its 48 bytes.
    pub const fn from_bytes(bytes: [u8; HASH_LEN]) -> Self {
        Self(bytes)
    }

    /// The 48 bytes.
    pub fn as_bytes(&self) -> &[u8; HASH_LEN] {
        &self.0
    }
}

impl TryFrom<&[u8]> for TreeHash {
    type Error = ProofError;

    fn try_from(bytes: &[u8]) -> Result<Self, ProofError> {
        let bytes: [u8; HASH_LEN] = bytes
            .try_into()
            .map_err(|_| ProofError::NotHashes { len: bytes.len() })?;
        Ok(Self(bytes))
    }
}

impl fmt::Debug for TreeHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TreeHash({}…)", hex::encode(&self.0[..8]))
    }
}

impl fmt::Display for TreeHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

/// Why an inclusion proof was refused. Each variant names what failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProofError {
    /// The leaf index is not inside the tree.
    #[error("leaf index {index} is out of range for a tree of {tree_size} leaves")]
    IndexOutOfRange {
        /// The index.
        index: u64,
        /// The tree size.
        tree_size: u64,
    },
    /// The path does not have the length that the index and tree size fix.
    #[error(
        "inclusion proof for leaf {index} of {tree_size} has {found} hashes, must have {expected}"
    )]
    WrongLength {
        /// The index.
        index: u64,
        /// The tree size.
        tree_size: u64,
        /// Hashes the shape requires.
        expected: usize,
        /// Hashes given.
        found: usize,
    },
    /// The bytes are not a whole number of 48-byte hashes.
    #[error("{len} bytes are not a whole number of {HASH_LEN}-byte SHA-384 hashes")]
    NotHashes {
        /// Length of the bytes.
        len: usize,
    },
    /// The path does not lead from the leaf to the root.
    #[error(
        "inclusion proof does not lead from the leaf to the root (leaf, proof or root altered)"
    )]
    RootMismatch,
    /// A size was asked of a tree that has fewer leaves.
    #[error("a tree of {tree_size} leaves has no prefix of {size} leaves")]
    SizeBeyondTree {
        /// The size asked for.
        size: u64,
        /// The leaves the tree has.
        tree_size: u64,
    },
    /// A consistency proof was asked from a larger tree to a smaller one.
    #[error("no consistency proof leads from {old_size} leaves back to {new_size}")]
    SizesOutOfOrder {
        /// The older (claimed smaller) size.
        old_size: u64,
        /// The newer size.
        new_size: u64,
    },
    /// A consistency proof does not have the length that its two sizes fix.
    #[error(
        "consistency proof from {old_size} to {new_size} leaves has {found} hashes, must have {expected}"
    )]
    ConsistencyWrongLength {
        /// The older size.
        old_size: u64,
        /// The newer size.
        new_size: u64,
        /// Hashes the shape requires.
        expected: usize,
        /// Hashes given.
        found: usize,
    },
    /// The proof does not rebuild the old root: the first `old_size` leaves are not the ones the
    /// old root was computed over, or the proof or the old root was altered.
    #[error(
        "consistency proof does not rebuild the old root of {old_size} leaves (the first {old_size} leaves were rewritten, or the proof or the old root altered)"
    )]
    OldRootMismatch {
        /// The older size.
        old_size: u64,
    },
    /// The proof rebuilds the old root but does not lead to the new one: the new tree does not
    /// extend the old one, or the proof or the new root was altered.
    #[error(
        "consistency proof does not lead to the new root of {new_size} leaves (the tree of {new_size} does not extend the one of {old_size}, or the proof or the new root altered)"
    )]
    NewRootMismatch {
        /// The older size.
        old_size: u64,
        /// The newer size.
        new_size: u64,
    },
}

/// `SHA-384(0x00 ‖ leaf)`.
pub fn leaf_hash(leaf: &[u8]) -> TreeHash {
    leaf_hash_parts(&[leaf])
}

/// The leaf hash of the concatenation of `parts`, without concatenating them.
pub fn leaf_hash_parts(parts: &[&[u8]]) -> TreeHash {
    let mut ctx = Context::new(&SHA384);
    ctx.update(&[LEAF_PREFIX]);
    for p in parts {
        ctx.update(p);
    }
    finish(ctx)
}

/// `SHA-384(0x01 ‖ left ‖ right)`.
pub fn node_hash(left: &TreeHash, right: &TreeHash) -> TreeHash {
    let mut ctx = Context::new(&SHA384);
    ctx.update(&[NODE_PREFIX]);
    ctx.update(&left.0);
    ctx.update(&right.0);
    finish(ctx)
}

/// The root of a tree without leaves: SHA-384 of nothing.
pub fn empty_root() -> TreeHash {
    finish(Context::new(&SHA384))
}

fn finish(ctx: Context) -> TreeHash {
    let mut out = [0u8; HASH_LEN];
    out.copy_from_slice(ctx.finish().as_ref());
    TreeHash(out)
}

/// The root over `leaf_hashes`, in O(n) time, keeping one level at a time.
pub fn root(leaf_hashes: &[TreeHash]) -> TreeHash {
    match leaf_hashes {
        [] => empty_root(),
        [only] => *only,
        _ => {
            let mut level = next_level(leaf_hashes);
            while level.len() > 1 {
                // In place: slot i is written after slots 2i and 2i + 1 (both ≥ i) are read, and
                // slots below i are never read again.
                let n = level.len();
                for i in 0..n / 2 {
                    level[i] = node_hash(&level[2 * i], &level[2 * i + 1]);
                }
                if n % 2 == 1 {
                    level[n / 2] = level[n - 1];
                }
                level.truncate(n.div_ceil(2));
            }
            level[0]
        }
    }
}

/// Pairs neighbours from the left; a last node without a partner moves up unchanged.
fn next_level(level: &[TreeHash]) -> Vec<TreeHash> {
    level
        .chunks(2)
        .map(|pair| match pair {
            [l, r] => node_hash(l, r),
            [single] => *single,
            _ => unreachable!("chunks(2) yields one or two items"),
        })
        .collect()
}

/// How many hashes the inclusion proof of leaf `index` in a tree of `tree_size` leaves has;
/// `None` when the index is outside the tree.
pub fn path_len(index: u64, tree_size: u64) -> Option<usize> {
    if index >= tree_size {
        return None;
    }
    let (mut i, mut n, mut len) = (index, tree_size, 0);
    while n > 1 {
        if i ^ 1 < n {
            len += 1;
        }
        i >>= 1;
        n = n.div_ceil(2);
    }
    Some(len)
}

/// A whole tree kept in memory, every level, to hand out inclusion proofs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tree {
    /// `levels[0]` holds the leaf hashes, the last level the root alone (or nothing when empty).
    levels: Vec<Vec<TreeHash>>,
}

impl Tree {
    /// The tree over `leaves`, each hashed as a leaf.
    pub fn from_leaves<I, L>(leaves: I) -> Self
    where
        I: IntoIterator<Item = L>,
        L: AsRef<[u8]>,
    {
        Self::from_leaf_hashes(leaves.into_iter().map(|l| leaf_hash(l.as_ref())).collect())
    }

    /// The tree over leaves already hashed with [`leaf_hash`].
    pub fn from_leaf_hashes(leaf_hashes: Vec<TreeHash>) -> Self {
        let mut levels = vec![leaf_hashes];
        while let Some(top) = levels.last().filter(|l| l.len() > 1) {
            let next = next_level(top);
            levels.push(next);
        }
        Self { levels }
    }

    /// Number of leaves.
    pub fn len(&self) -> u64 {
        self.leaf_hashes().len() as u64
    }

    /// Whether the tree has no leaves.
    pub fn is_empty(&self) -> bool {
        self.leaf_hashes().is_empty()
    }

    /// The leaf hashes, in order.
    pub fn leaf_hashes(&self) -> &[TreeHash] {
        &self.levels[0]
    }

    /// The root; [`empty_root`] for a tree without leaves.
    pub fn root(&self) -> TreeHash {
        match self.levels.last().map(Vec::as_slice) {
            Some([root]) => *root,
            _ => empty_root(),
        }
    }

    /// The inclusion proof of the leaf at `index`.
    pub fn proof(&self, index: u64) -> Result<InclusionProof, ProofError> {
        let tree_size = self.len();
        let out_of_range = ProofError::IndexOutOfRange { index, tree_size };
        let mut i = usize::try_from(index).map_err(|_| out_of_range.clone())?;
        if i >= self.leaf_hashes().len() {
            return Err(out_of_range);
        }
        let mut path = Vec::with_capacity(self.levels.len());
        for level in &self.levels[..self.levels.len() - 1] {
            if let Some(sibling) = level.get(i ^ 1) {
                path.push(*sibling);
            }
            i >>= 1;
        }
        Ok(InclusionProof {
            index,
            tree_size,
            path,
        })
    }

    /// Appends a leaf (already hashed with [`leaf_hash`]), updating only the nodes on its path
    /// (O(log n)).
    pub fn push(&mut self, leaf_hash: TreeHash) {
        self.levels[0].push(leaf_hash);
        let mut l = 0;
        loop {
            let n = self.levels[l].len();
            if n <= 1 {
                self.levels.truncate(l + 1);
                return;
            }
            let i = n - 1;
            let up = if i % 2 == 1 {
                node_hash(&self.levels[l][i - 1], &self.levels[l][i])
            } else {
                self.levels[l][i]
            };
            if self.levels.len() == l + 1 {
                self.levels.push(Vec::new());
            }
            let parent = &mut self.levels[l + 1];
            // The parent of node i is i / 2: new when i is even, else it was this level's
            // previous last node carried up unchanged, now replaced by the pair's hash.
            if parent.len() > i / 2 {
                parent[i / 2] = up;
            } else {
                parent.push(up);
            }
            l += 1;
        }
    }

    /// The root of the tree of the first `size` leaves (RFC 6962 `MTH(D[0:size])`).
    pub fn root_at(&self, size: u64) -> Result<TreeHash, ProofError> {
        let end = self.prefix(size)?;
        Ok(self.subtree(0, end))
    }

    /// The inclusion proof of the leaf at `index` in the tree of the first `size` leaves.
    pub fn proof_at(&self, index: u64, size: u64) -> Result<InclusionProof, ProofError> {
        let end = self.prefix(size)?;
        let out_of_range = ProofError::IndexOutOfRange {
            index,
            tree_size: size,
        };
        let m = usize::try_from(index).map_err(|_| out_of_range.clone())?;
        if m >= end {
            return Err(out_of_range);
        }
        let mut path = Vec::new();
        self.path_into(m, 0, end, &mut path);
        Ok(InclusionProof {
            index,
            tree_size: size,
            path,
        })
    }

    /// The proof that the tree of the first `old_size` leaves is a prefix of the tree of the
    /// first `new_size` (RFC 9162 §2.1.4.1). Empty when `old_size` is 0 or equals `new_size`.
    pub fn consistency(
        &self,
        old_size: u64,
        new_size: u64,
    ) -> Result<ConsistencyProof, ProofError> {
        if old_size > new_size {
            return Err(ProofError::SizesOutOfOrder { old_size, new_size });
        }
        let n = self.prefix(new_size)?;
        let mut path = Vec::new();
        if old_size > 0 && old_size < new_size {
            // Invariant: old_size < new_size, which fits a usize.
            let m = usize::try_from(old_size).unwrap_or(n);
            self.subproof_into(m, 0, n, true, &mut path);
        }
        Ok(ConsistencyProof {
            old_size,
            new_size,
            path,
        })
    }

    /// `size` as a number of leaves of this tree.
    fn prefix(&self, size: u64) -> Result<usize, ProofError> {
        let tree_size = self.len();
        usize::try_from(size)
            .ok()
            .filter(|&s| s <= self.leaf_hashes().len())
            .ok_or(ProofError::SizeBeyondTree { size, tree_size })
    }

    /// `MTH(D[start:end])`, for the ranges the RFC's recursion visits: `start` is a multiple
    /// of the largest power of two not above `end - start`, so every perfect subtree it splits
    /// into is a stored node.
    fn subtree(&self, start: usize, end: usize) -> TreeHash {
        let n = end - start;
        if n == 0 {
            return empty_root();
        }
        if n.is_power_of_two() && start.is_multiple_of(n) {
            let level = n.trailing_zeros() as usize;
            return self.levels[level][start >> level];
        }
        let k = split(n);
        node_hash(
            &self.subtree(start, start + k),
            &self.subtree(start + k, end),
        )
    }

    /// RFC 6962 `PATH(m, D[start:end])`, bottom up, appended to `out`.
    fn path_into(&self, m: usize, start: usize, end: usize, out: &mut Vec<TreeHash>) {
        let n = end - start;
        if n <= 1 {
            return;
        }
        let k = split(n);
        if m < k {
            self.path_into(m, start, start + k, out);
            out.push(self.subtree(start + k, end));
        } else {
            self.path_into(m - k, start + k, end, out);
            out.push(self.subtree(start, start + k));
        }
    }

    /// RFC 9162 `SUBPROOF(m, D[start:end], b)`, appended to `out`.
    fn subproof_into(&self, m: usize, start: usize, end: usize, b: bool, out: &mut Vec<TreeHash>) {
        let n = end - start;
        if m == n {
            if !b {
                out.push(self.subtree(start, end));
            }
            return;
        }
        let k = split(n);
        if m <= k {
            self.subproof_into(m, start, start + k, b, out);
            out.push(self.subtree(start + k, end));
        } else {
            self.subproof_into(m - k, start + k, end, false, out);
            out.push(self.subtree(start, start + k));
        }
    }
}

/// The largest power of two smaller than `n` (for `n > 1`).
fn split(n: usize) -> usize {
    if n <= 1 {
        return 0;
    }
    1 << (usize::BITS - 1 - (n - 1).leading_zeros())
}

/// The roots of the perfect subtrees a growing tree consists of, largest first: enough to
/// compute the tree's root at any size it passes through, in O(log n) memory.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Frontier {
    size: u64,
    /// (height, hash): strictly decreasing heights, one per set bit of `size`.
    nodes: Vec<(u32, TreeHash)>,
}

impl Frontier {
    /// An empty tree.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends a leaf (already hashed with [`leaf_hash`]).
    pub fn push(&mut self, leaf_hash: TreeHash) {
        let mut node = (0u32, leaf_hash);
        while let Some(&(h, left)) = self.nodes.last() {
            if h != node.0 {
                break;
            }
            self.nodes.pop();
            node = (h + 1, node_hash(&left, &node.1));
        }
        self.nodes.push(node);
        self.size += 1;
    }

    /// Number of leaves so far.
    pub fn len(&self) -> u64 {
        self.size
    }

    /// Whether no leaf was pushed.
    pub fn is_empty(&self) -> bool {
        self.size == 0
    }

    /// The root of the tree of the leaves so far.
    pub fn root(&self) -> TreeHash {
        let mut nodes = self.nodes.iter().rev();
        let Some(&(_, mut acc)) = nodes.next() else {
            return empty_root();
        };
        for (_, left) in nodes {
            acc = node_hash(left, &acc);
        }
        acc
    }
}

/// How many hashes the consistency proof from `old_size` to `new_size` leaves has
/// (`None` when `old_size > new_size`).
pub fn consistency_len(old_size: u64, new_size: u64) -> Option<usize> {
    if old_size > new_size {
        return None;
    }
    if old_size == 0 || old_size == new_size {
        return Some(0);
    }
    let (mut m, mut n, mut b, mut len) = (old_size, new_size, true, 0);
    loop {
        if m == n {
            if !b {
                len += 1;
            }
            return Some(len);
        }
        let k = 1u64 << (u64::BITS - 1 - (n - 1).leading_zeros());
        if m <= k {
            n = k;
        } else {
            m -= k;
            n -= k;
            b = false;
        }
        len += 1;
    }
}

/// The proof that a tree of `old_size` leaves is a prefix of one of `new_size` leaves
/// (RFC 9162 §2.1.4). Its shape (length for the two sizes) is checked when it is made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsistencyProof {
    old_size: u64,
    new_size: u64,
    path: Vec<TreeHash>,
}

impl ConsistencyProof {
    /// A proof from `old_size` to `new_size` leaves; refuses sizes out of order and a path of
    /// the wrong length for them.
    pub fn new(old_size: u64, new_size: u64, path: Vec<TreeHash>) -> Result<Self, ProofError> {
        let expected = consistency_len(old_size, new_size)
            .ok_or(ProofError::SizesOutOfOrder { old_size, new_size })?;
        if path.len() != expected {
            return Err(ProofError::ConsistencyWrongLength {
                old_size,
                new_size,
                expected,
                found: path.len(),
            });
        }
        Ok(Self {
            old_size,
            new_size,
            path,
        })
    }

    /// A proof from its path given as concatenated 48-byte hashes (see
    /// [`ConsistencyProof::to_bytes`]).
    pub fn from_bytes(old_size: u64, new_size: u64, bytes: &[u8]) -> Result<Self, ProofError> {
        Self::new(old_size, new_size, hashes(bytes)?)
    }

    /// The path as concatenated 48-byte hashes, in the RFC's order.
    pub fn to_bytes(&self) -> Vec<u8> {
        self.path.iter().flat_map(|h| h.0).collect()
    }

    /// The size of the older tree.
    pub fn old_size(&self) -> u64 {
        self.old_size
    }

    /// The size of the newer tree.
    pub fn new_size(&self) -> u64 {
        self.new_size
    }

    /// The hashes, in the RFC's order.
    pub fn path(&self) -> &[TreeHash] {
        &self.path
    }

    /// Checks that the tree with `old_root` (of `old_size` leaves) is a prefix of the tree with
    /// `new_root` (of `new_size` leaves), RFC 9162 §2.1.4.2. Equal sizes need equal roots; the
    /// empty tree (whose root is [`empty_root`]) is a prefix of every tree.
    pub fn verify(&self, old_root: &TreeHash, new_root: &TreeHash) -> Result<(), ProofError> {
        let (old_size, new_size) = (self.old_size, self.new_size);
        if old_size == 0 {
            if *old_root != empty_root() {
                return Err(ProofError::OldRootMismatch { old_size });
            }
            return Ok(());
        }
        if old_size == new_size {
            if old_root != new_root {
                return Err(ProofError::NewRootMismatch { old_size, new_size });
            }
            return Ok(());
        }
        // 0 < old_size < new_size, and `new` checked the path's length, so it is not empty.
        let mut path = self.path.iter();
        let first = if old_size.is_power_of_two() {
            *old_root
        } else {
            match path.next() {
                Some(h) => *h,
                None => return Err(ProofError::OldRootMismatch { old_size }),
            }
        };
        let (mut fn_, mut sn) = (old_size - 1, new_size - 1);
        while fn_ & 1 == 1 {
            fn_ >>= 1;
            sn >>= 1;
        }
        let (mut fr, mut sr) = (first, first);
        for c in path {
            if sn == 0 {
                return Err(ProofError::NewRootMismatch { old_size, new_size });
            }
            if fn_ & 1 == 1 || fn_ == sn {
                fr = node_hash(c, &fr);
                sr = node_hash(c, &sr);
                while fn_ & 1 == 0 && fn_ != 0 {
                    fn_ >>= 1;
                    sn >>= 1;
                }
            } else {
                sr = node_hash(&sr, c);
            }
            fn_ >>= 1;
            sn >>= 1;
        }
        if fr != *old_root {
            return Err(ProofError::OldRootMismatch { old_size });
        }
        if sr != *new_root || sn != 0 {
            return Err(ProofError::NewRootMismatch { old_size, new_size });
        }
        Ok(())
    }
}

/// Concatenated 48-byte hashes, split.
fn hashes(bytes: &[u8]) -> Result<Vec<TreeHash>, ProofError> {
    if !bytes.len().is_multiple_of(HASH_LEN) {
        return Err(ProofError::NotHashes { len: bytes.len() });
    }
    bytes
        .chunks_exact(HASH_LEN)
        .map(TreeHash::try_from)
        .collect()
}

/// The audit path of one leaf: the hashes that lead from it to the root of a tree of a given
/// size. Its shape (length for index and size) is checked when it is made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InclusionProof {
    index: u64,
    tree_size: u64,
    path: Vec<TreeHash>,
}

impl InclusionProof {
    /// A proof for leaf `index` of a tree of `tree_size` leaves; refuses a path of the wrong
    /// length for that position.
    pub fn new(index: u64, tree_size: u64, path: Vec<TreeHash>) -> Result<Self, ProofError> {
        let expected =
            path_len(index, tree_size).ok_or(ProofError::IndexOutOfRange { index, tree_size })?;
        if path.len() != expected {
            return Err(ProofError::WrongLength {
                index,
                tree_size,
                expected,
                found: path.len(),
            });
        }
        Ok(Self {
            index,
            tree_size,
            path,
        })
    }

    /// A proof from its path given as concatenated 48-byte hashes (see [`InclusionProof::to_bytes`]).
    pub fn from_bytes(index: u64, tree_size: u64, bytes: &[u8]) -> Result<Self, ProofError> {
        Self::new(index, tree_size, hashes(bytes)?)
    }

    /// The path as concatenated 48-byte hashes, bottom up.
    pub fn to_bytes(&self) -> Vec<u8> {
        self.path.iter().flat_map(|h| h.0).collect()
    }

    /// The leaf's index.
    pub fn index(&self) -> u64 {
        self.index
    }

    /// The size of the tree the proof is for.
    pub fn tree_size(&self) -> u64 {
        self.tree_size
    }

    /// The sibling hashes, bottom up.
    pub fn path(&self) -> &[TreeHash] {
        &self.path
    }

    /// The root this proof leads to from a leaf with hash `leaf_hash`.
    pub fn root_from_leaf_hash(&self, leaf_hash: &TreeHash) -> TreeHash {
        let (mut i, mut n) = (self.index, self.tree_size);
        let mut siblings = self.path.iter();
        let mut acc = *leaf_hash;
        while n > 1 {
            if i ^ 1 < n {
                // Invariant: `new` checked that the path has one hash per level with a sibling.
                let Some(sibling) = siblings.next() else {
                    unreachable!("proof length checked at construction")
                };
                acc = if i & 1 == 1 {
                    node_hash(sibling, &acc)
                } else {
                    node_hash(&acc, sibling)
                };
            }
            i >>= 1;
            n = n.div_ceil(2);
        }
        acc
    }

    /// Checks that `leaf` is the leaf at this proof's index in the tree with `root`.
    pub fn verify(&self, leaf: &[u8], root: &TreeHash) -> Result<(), ProofError> {
        self.verify_leaf_hash(&leaf_hash(leaf), root)
    }

    /// Checks that the leaf with hash `leaf_hash` is at this proof's index in the tree with `root`.
    pub fn verify_leaf_hash(
        &self,
        leaf_hash: &TreeHash,
        root: &TreeHash,
    ) -> Result<(), ProofError> {
        if &self.root_from_leaf_hash(leaf_hash) != root {
            return Err(ProofError::RootMismatch);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::crypto::sha384;

    /// RFC 6962 §2.1, MTH, written as the RFC states it.
    fn reference_root(leaves: &[Vec<u8>]) -> TreeHash {
        match leaves.len() {
            0 => TreeHash(sha384(b"")),
            1 => TreeHash(sha384(&[&[0u8][..], &leaves[0]].concat())),
            n => {
                let k = split(n);
                let (l, r) = (reference_root(&leaves[..k]), reference_root(&leaves[k..]));
                TreeHash(sha384(&[&[1u8][..], &l.0, &r.0].concat()))
            }
        }
    }

    /// RFC 6962 §2.1.1, PATH(m, D[n]).
    fn reference_path(m: usize, leaves: &[Vec<u8>]) -> Vec<TreeHash> {
        let n = leaves.len();
        if n <= 1 {
            return Vec::new();
        }
        let k = split(n);
        if m < k {
            let mut p = reference_path(m, &leaves[..k]);
            p.push(reference_root(&leaves[k..]));
            p
        } else {
            let mut p = reference_path(m - k, &leaves[k..]);
            p.push(reference_root(&leaves[..k]));
            p
        }
    }

    /// The largest power of two smaller than `n` (n > 1).
    fn split(n: usize) -> usize {
        let mut k = 1;
        while k * 2 < n {
            k *= 2;
        }
        k
    }

    fn leaves(n: usize) -> Vec<Vec<u8>> {
        (0..n).map(|i| format!("leaf {i}").into_bytes()).collect()
    }

    #[test]
    fn empty_tree_has_the_hash_of_nothing_and_no_proofs() {
        let tree = Tree::from_leaves(Vec::<Vec<u8>>::new());
        assert_eq!(tree.root(), TreeHash(sha384(b"")));
        assert_eq!(root(&[]), tree.root());
        assert_eq!(
            tree.proof(0),
            Err(ProofError::IndexOutOfRange {
                index: 0,
                tree_size: 0
            })
        );
    }

    #[test]
    fn leaves_and_nodes_are_domain_separated() {
        let a = leaf_hash(b"a");
        let b = leaf_hash(b"b");
        assert_eq!(a, TreeHash(sha384(b"\x00a")));
        assert_eq!(
            node_hash(&a, &b),
            TreeHash(sha384(&[&[1u8][..], &a.0, &b.0].concat()))
        );
        // A leaf whose bytes are an inner node's input does not hash to that node.
        let forged = [&a.0[..], &b.0].concat();
        assert_ne!(leaf_hash(&forged), node_hash(&a, &b));
    }

    #[test]
    fn seven_leaves_split_at_four() {
        let l = leaves(7);
        let h: Vec<TreeHash> = l.iter().map(|x| leaf_hash(x)).collect();
        let left = node_hash(&node_hash(&h[0], &h[1]), &node_hash(&h[2], &h[3]));
        let right = node_hash(&node_hash(&h[4], &h[5]), &h[6]);
        assert_eq!(Tree::from_leaves(&l).root(), node_hash(&left, &right));
        // The last leaf has no sibling at the bottom level: its path is [h45, left].
        let proof = Tree::from_leaves(&l).proof(6).unwrap();
        assert_eq!(proof.path(), [node_hash(&h[4], &h[5]), left]);
    }

    #[test]
    fn proof_of_wrong_length_is_refused_naming_both_lengths() {
        let err = InclusionProof::new(2, 5, vec![leaf_hash(b"x")]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "inclusion proof for leaf 2 of 5 has 1 hashes, must have 3"
        );
        assert_eq!(
            InclusionProof::from_bytes(0, 2, &[0; 47]),
            Err(ProofError::NotHashes { len: 47 })
        );
    }

    #[test]
    fn proof_bytes_round_trip() {
        let tree = Tree::from_leaves(leaves(13));
        let proof = tree.proof(9).unwrap();
        let back = InclusionProof::from_bytes(9, 13, &proof.to_bytes()).unwrap();
        assert_eq!(back, proof);
        back.verify(b"leaf 9", &tree.root()).unwrap();
    }

    #[test]
    fn path_len_is_the_depth_of_the_leaf() {
        assert_eq!(path_len(0, 1), Some(0));
        assert_eq!(path_len(0, 1024), Some(10));
        assert_eq!(path_len(1024, 1025), Some(1));
        assert_eq!(path_len(5, 5), None);
        // The last of 2^64 - 1 leaves has no sibling at the bottom, then a full tree of 2^63 nodes.
        assert_eq!(path_len(u64::MAX - 1, u64::MAX), Some(63));
        assert_eq!(path_len(0, u64::MAX), Some(64));
    }

    proptest! {
        #[test]
        fn tree_matches_the_rfc_definition(n in 0usize..80) {
            let l = leaves(n);
            let tree = Tree::from_leaves(&l);
            prop_assert_eq!(tree.root(), reference_root(&l));
            prop_assert_eq!(root(tree.leaf_hashes()), tree.root());
            for m in 0..n {
                let proof = tree.proof(m as u64).unwrap();
                let expected = reference_path(m, &l);
                prop_assert_eq!(proof.path(), expected.as_slice());
                prop_assert_eq!(Some(proof.path().len()), path_len(m as u64, n as u64));
            }
        }

        #[test]
        fn every_leaf_proof_verifies_against_the_root(
            l in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..40), 1..70),
        ) {
            let tree = Tree::from_leaves(&l);
            let root = tree.root();
            for (m, leaf) in l.iter().enumerate() {
                let proof = tree.proof(m as u64).unwrap();
                prop_assert_eq!(proof.verify(leaf, &root), Ok(()));
            }
        }

        #[test]
        fn altered_leaf_proof_or_index_fails(
            l in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..40), 2..70),
            pick in any::<prop::sample::Index>(),
            flip in any::<prop::sample::Index>(),
            bit in 0u8..8,
            other in any::<prop::sample::Index>(),
        ) {
            // Distinct leaves, so that no other position legitimately holds the same bytes.
            let l: Vec<Vec<u8>> = l
                .into_iter()
                .enumerate()
                .map(|(i, mut leaf)| { leaf.extend_from_slice(&(i as u32).to_be_bytes()); leaf })
                .collect();
            let tree = Tree::from_leaves(&l);
            let root = tree.root();
            let m = pick.index(l.len());
            let proof = tree.proof(m as u64).unwrap();

            // Another leaf at the same position.
            let mut leaf = l[m].clone();
            leaf.push(bit);
            prop_assert_eq!(proof.verify(&leaf, &root), Err(ProofError::RootMismatch));

            // One bit of the path flipped.
            if !proof.path().is_empty() {
                let mut bytes = proof.to_bytes();
                let at = flip.index(bytes.len());
                bytes[at] ^= 1 << bit;
                let bad = InclusionProof::from_bytes(m as u64, l.len() as u64, &bytes).unwrap();
                prop_assert_eq!(bad.verify(&l[m], &root), Err(ProofError::RootMismatch));
            }

            // The same path claimed for another index: refused for its shape or its content.
            let o = other.index(l.len());
            if o != m {
                let result = InclusionProof::new(o as u64, l.len() as u64, proof.path().to_vec())
                    .and_then(|p| p.verify(&l[m], &root));
                prop_assert!(result.is_err(), "leaf {} verified at index {}", m, o);
            }
        }
    }

    fn hashes_of(n: usize) -> Vec<TreeHash> {
        leaves(n).iter().map(|l| leaf_hash(l)).collect()
    }

    #[test]
    fn consistency_between_equal_sizes_or_from_nothing_is_empty() {
        let tree = Tree::from_leaf_hashes(hashes_of(5));
        let same = tree.consistency(5, 5).unwrap();
        assert!(same.path().is_empty());
        same.verify(&tree.root(), &tree.root()).unwrap();
        assert_eq!(
            same.verify(&tree.root_at(4).unwrap(), &tree.root()),
            Err(ProofError::NewRootMismatch {
                old_size: 5,
                new_size: 5
            })
        );
        let from_zero = tree.consistency(0, 5).unwrap();
        from_zero.verify(&empty_root(), &tree.root()).unwrap();
        assert_eq!(
            from_zero.verify(&tree.root(), &tree.root()),
            Err(ProofError::OldRootMismatch { old_size: 0 })
        );
    }

    #[test]
    fn consistency_refuses_sizes_out_of_order_or_beyond_the_tree() {
        let tree = Tree::from_leaf_hashes(hashes_of(5));
        assert_eq!(
            tree.consistency(4, 3).unwrap_err().to_string(),
            "no consistency proof leads from 4 leaves back to 3"
        );
        assert_eq!(
            tree.consistency(2, 6).unwrap_err().to_string(),
            "a tree of 5 leaves has no prefix of 6 leaves"
        );
        let proof = tree.consistency(3, 5).unwrap();
        let err = ConsistencyProof::new(3, 5, proof.path()[1..].to_vec()).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "consistency proof from 3 to 5 leaves has {} hashes, must have {}",
                proof.path().len() - 1,
                proof.path().len()
            )
        );
    }

    #[test]
    fn consistency_matches_the_rfc_example() {
        // RFC 9162 §2.1.5: from 3 to 7 leaves the proof is [c, d, g, l].
        let h = hashes_of(7);
        let (c, d) = (h[2], h[3]);
        let g = node_hash(&h[0], &h[1]);
        let l = node_hash(&node_hash(&h[4], &h[5]), &h[6]);
        let tree = Tree::from_leaf_hashes(h);
        assert_eq!(tree.consistency(3, 7).unwrap().path(), [c, d, g, l]);
        // From 4 to 7: [l] (the old root is a complete subtree).
        assert_eq!(tree.consistency(4, 7).unwrap().path(), [l]);
    }

    proptest! {
        #[test]
        fn consistency_proofs_verify_and_catch_changes(
            n in 1usize..150,
            pick_m in any::<prop::sample::Index>(),
            pick_flip in any::<prop::sample::Index>(),
            pick_leaf in any::<prop::sample::Index>(),
            bit in 0u8..8,
        ) {
            let h = hashes_of(n);
            let tree = Tree::from_leaf_hashes(h.clone());
            let m = pick_m.index(n) + 1;
            let old_root = tree.root_at(m as u64).unwrap();
            let proof = tree.consistency(m as u64, n as u64).unwrap();
            prop_assert_eq!(Some(proof.path().len()), consistency_len(m as u64, n as u64));
            prop_assert_eq!(proof.verify(&old_root, &tree.root()), Ok(()));
            let back = ConsistencyProof::from_bytes(m as u64, n as u64, &proof.to_bytes()).unwrap();
            prop_assert_eq!(&back, &proof);

            // One bit of the path flipped.
            if !proof.path().is_empty() {
                let mut bytes = proof.to_bytes();
                let at = pick_flip.index(bytes.len());
                bytes[at] ^= 1 << bit;
                let bad = ConsistencyProof::from_bytes(m as u64, n as u64, &bytes).unwrap();
                prop_assert!(bad.verify(&old_root, &tree.root()).is_err());
            }

            // A tree whose first m leaves differ: its old root does not fit the new tree.
            let mut other = h[..m].to_vec();
            let j = pick_leaf.index(m);
            other[j] = leaf_hash(b"rewritten");
            let rewritten = Tree::from_leaf_hashes(other).root();
            prop_assert!(proof.verify(&rewritten, &tree.root()).is_err());

            // The same path claimed for other sizes, against the honest roots at those sizes
            // (of a tree one leaf longer): refused, unless it happens to be their proof too.
            // (A root does not name its size: a proof is only as good as the (size, root)
            // pairs it is checked against, as signed heads give them.)
            let big = Tree::from_leaf_hashes(hashes_of(n + 1));
            let (m, n) = (m as u64, n as u64);
            for (om, on) in [(m + 1, n), (m - 1, n), (m, n + 1)] {
                if om == 0 || om > on {
                    continue;
                }
                let result = ConsistencyProof::new(om, on, proof.path().to_vec()).and_then(|p| {
                    p.verify(&big.root_at(om).unwrap(), &big.root_at(on).unwrap())
                });
                if result.is_ok() {
                    let honest = big.consistency(om, on).unwrap();
                    prop_assert_eq!(honest.path(), proof.path(), "{}..{} as {}..{}", m, n, om, on);
                }
            }
        }

        #[test]
        fn prefixes_of_a_tree_agree_with_trees_of_the_prefix(n in 0usize..120) {
            let h = hashes_of(n);
            let tree = Tree::from_leaf_hashes(h.clone());
            let mut grown = Tree::from_leaf_hashes(Vec::new());
            let mut frontier = Frontier::new();
            prop_assert_eq!(frontier.root(), empty_root());
            for size in 0..=n {
                let prefix = Tree::from_leaf_hashes(h[..size].to_vec());
                prop_assert_eq!(&grown, &prefix);
                prop_assert_eq!(frontier.root(), prefix.root());
                prop_assert_eq!(frontier.len(), size as u64);
                let root = tree.root_at(size as u64).unwrap();
                prop_assert_eq!(root, prefix.root());
                for (i, leaf) in h[..size].iter().enumerate() {
                    let proof = tree.proof_at(i as u64, size as u64).unwrap();
                    prop_assert_eq!(&proof, &prefix.proof(i as u64).unwrap());
                    prop_assert_eq!(proof.verify_leaf_hash(leaf, &root), Ok(()));
                }
                if size < n {
                    grown.push(h[size]);
                    frontier.push(h[size]);
                }
            }
            prop_assert_eq!(
                tree.root_at(n as u64 + 1),
                Err(ProofError::SizeBeyondTree { size: n as u64 + 1, tree_size: n as u64 })
            );
        }
    }

    proptest! {
        #[test]
        fn any_consistency_proof_of_the_right_shape_is_checked_without_panicking(
            old_size in prop_oneof![0u64..300, any::<u64>()],
            extra in prop_oneof![0u64..300, any::<u64>()],
            seed in any::<u8>(),
        ) {
            let new_size = old_size.saturating_add(extra);
            let len = consistency_len(old_size, new_size).unwrap();
            let path = (0..len).map(|i| leaf_hash(&[seed, i as u8])).collect();
            let proof = ConsistencyProof::new(old_size, new_size, path).unwrap();
            let result = proof.verify(&leaf_hash(b"old"), &leaf_hash(b"new"));
            prop_assert!(result.is_err());
        }
    }
}
