//! Path-vector route advertisements: what a node tells each neighbour it can reach.
//!
//! A broker sends its neighbours (over each hop link, in a [`FrameType::RouteAdvertisement`]
//! frame) every mesh it reaches, each with the path from itself to that mesh and the summed
//! round trip of that path. A receiver prepends nothing: it knows the advertiser is its
//! neighbour, refuses a path that already holds its own mesh (loop-free by path check), and
//! chooses, per destination, the path with the lowest summed round trip (its own link's to the
//! advertiser included), fewer hops breaking ties ([`better`]). Each advertisement is the
//! advertiser's whole table: a destination it no longer names is withdrawn.
//!
//! Wire form (CBOR, one value, exact arrays): `[[destination, [path…], rtt_us]…]`.
//!
//! [`FrameType::RouteAdvertisement`]: crate::frame::FrameType::RouteAdvertisement

use serde::Serialize;

use super::MAX_PATH;
use crate::cbor::{self, CborFault, exact_array};
use crate::id::MeshId;

/// Most destinations one advertisement may name.
pub const MAX_ROUTES: usize = 4096;

/// One destination an advertiser reaches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reach {
    /// The mesh reached.
    pub destination: MeshId,
    /// The meshes a frame crosses from the advertiser to the destination: the advertiser
    /// first, the destination last.
    pub path: Vec<MeshId>,
    /// The summed round trip of the path's links, in microseconds.
    pub rtt_us: u64,
}

/// An advertiser's whole routing table.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Advertisement {
    /// Every destination it reaches.
    pub routes: Vec<Reach>,
}

/// An advertisement that cannot be accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AdvertisementError {
    /// Not one CBOR value of the advertisement's form.
    #[error("route advertisement is not well-formed: {0}")]
    Malformed(String),
    /// Bytes follow the value.
    #[error("route advertisement is followed by {0} more bytes")]
    Trailing(usize),
    /// Too many destinations.
    #[error("route advertisement names {0} destinations, at most {MAX_ROUTES}")]
    TooMany(usize),
    /// A route's path is out of bounds or does not end at its destination.
    #[error("route advertisement entry {index} (mesh {destination}): {reason}")]
    BadPath {
        /// Its position.
        index: usize,
        /// The destination it names.
        destination: MeshId,
        /// What is wrong.
        reason: String,
    },
}

exact_array! {
    struct ReachIn(MeshId, Vec<MeshId>, u64);
}

#[derive(Serialize)]
struct ReachOut<'a>(&'a MeshId, &'a [MeshId], u64);

impl Advertisement {
    /// The wire form (the frame's body).
    pub fn encode(&self) -> Vec<u8> {
        let out: Vec<ReachOut<'_>> = (self.routes.iter())
            .map(|r| ReachOut(&r.destination, &r.path, r.rtt_us))
            .collect();
        cbor::to_vec(&out, 64 * self.routes.len() + 8)
    }

    /// Reads an advertisement, refusing one out of bounds or whose paths are malformed (empty,
    /// longer than [`MAX_PATH`], not ending at their destination, or naming a mesh twice).
    pub fn decode(bytes: &[u8]) -> Result<Self, AdvertisementError> {
        let raw: Vec<ReachIn> = cbor::from_slice(bytes).map_err(|f| match f {
            CborFault::NotCbor(reason) => AdvertisementError::Malformed(reason),
            CborFault::Trailing(n) => AdvertisementError::Trailing(n),
        })?;
        if raw.len() > MAX_ROUTES {
            return Err(AdvertisementError::TooMany(raw.len()));
        }
        let mut routes = Vec::with_capacity(raw.len());
        for (index, ReachIn(destination, path, rtt_us)) in raw.into_iter().enumerate() {
            let bad = |reason: String| AdvertisementError::BadPath {
                index,
                destination: destination.clone(),
                reason,
            };
            if path.is_empty() || path.len() > MAX_PATH {
                return Err(bad(format!(
                    "a path of {} meshes, not 1 to {MAX_PATH}",
                    path.len()
                )));
            }
            if path.last() != Some(&destination) {
                return Err(bad("the path does not end at the destination".to_owned()));
            }
            if (1..path.len()).any(|i| path[..i].contains(&path[i])) {
                return Err(bad("the path names a mesh twice".to_owned()));
            }
            routes.push(Reach {
                destination,
                path,
                rtt_us,
            });
        }
        Ok(Self { routes })
    }
}

/// Whether a path of summed round trip `a_rtt` and `a_hops` hops beats one of `b_rtt` and
/// `b_hops`: the lower round trip wins, fewer hops break ties.
pub fn better((a_rtt, a_hops): (u64, usize), (b_rtt, b_hops): (u64, usize)) -> bool {
    (a_rtt, a_hops) < (b_rtt, b_hops)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn m(s: &str) -> MeshId {
        s.parse().unwrap()
    }

    #[test]
    fn an_advertisement_round_trips() {
        let ad = Advertisement {
            routes: vec![
                Reach {
                    destination: m("c"),
                    path: vec![m("b"), m("c")],
                    rtt_us: 420,
                },
                Reach {
                    destination: m("b"),
                    path: vec![m("b")],
                    rtt_us: 0,
                },
            ],
        };
        assert_eq!(Advertisement::decode(&ad.encode()).unwrap(), ad);
        assert_eq!(
            Advertisement::decode(&Advertisement::default().encode()).unwrap(),
            Advertisement::default()
        );
    }

    #[test]
    fn malformed_paths_are_refused_naming_the_entry() {
        let one = |destination: &str, path: &[&str]| Advertisement {
            routes: vec![Reach {
                destination: m(destination),
                path: path.iter().map(|s| m(s)).collect(),
                rtt_us: 1,
            }],
        };
        let cases = [
            (one("c", &[]), "a path of 0 meshes, not 1 to 16"),
            (
                one("c", &["b", "d"]),
                "the path does not end at the destination",
            ),
            (
                one("c", &["b", "x", "b", "c"]),
                "the path names a mesh twice",
            ),
        ];
        for (ad, reason) in cases {
            let err = Advertisement::decode(&ad.encode()).unwrap_err();
            assert_eq!(
                err.to_string(),
                format!("route advertisement entry 0 (mesh c): {reason}")
            );
        }
        let long: Vec<String> = (0..=MAX_PATH).map(|i| format!("m{i}")).collect();
        let refs: Vec<&str> = long.iter().map(String::as_str).collect();
        let dest = refs[MAX_PATH];
        assert!(matches!(
            Advertisement::decode(&one(dest, &refs).encode()),
            Err(AdvertisementError::BadPath { .. })
        ));
    }

    #[test]
    fn bad_mesh_ids_extra_items_and_trailing_bytes_are_refused() {
        // An entry of four items.
        let four = cbor::to_vec(&vec![("c", vec!["c"], 1u64, 0u8)], 64);
        assert!(matches!(
            Advertisement::decode(&four),
            Err(AdvertisementError::Malformed(_))
        ));
        let bad_id = cbor::to_vec(&vec![("C!", vec!["C!"], 1u64)], 64);
        assert!(matches!(
            Advertisement::decode(&bad_id),
            Err(AdvertisementError::Malformed(_))
        ));
        let mut trailing = Advertisement::default().encode();
        trailing.push(0);
        assert_eq!(
            Advertisement::decode(&trailing),
            Err(AdvertisementError::Trailing(1))
        );
    }

    #[test]
    fn lower_round_trip_wins_and_fewer_hops_break_ties() {
        assert!(better((100, 3), (200, 1)));
        assert!(better((100, 1), (100, 2)));
        assert!(!better((100, 2), (100, 2)));
    }

    proptest! {
        #[test]
        fn decoding_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = Advertisement::decode(&bytes);
        }
    }
}
