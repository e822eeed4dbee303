//! Every Pendo account's verdict from one matching, held as a list sorted by Pendo account id.
//!
//! A list, not a map: a first run holds one verdict per Pendo account beside the facts and the
//! Salesforce Accounts they were made from, and at that moment a map's half-filled nodes (then
//! the copy made to drop each verdict's rank) were the largest part of the run's peak. The list
//! is built in order, so it is never sorted or copied; a look-up is a binary search.

use std::ops::Index;

use super::Outcome;

/// Pendo account id → [`Outcome`], in id order, one verdict per id.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Verdicts {
    list: Vec<(String, Outcome)>,
}

impl Verdicts {
    /// From a list already in id order without repeats (see [`Ranked`]).
    pub(super) fn sorted(list: Vec<(String, Outcome)>) -> Self {
        debug_assert!(list.windows(2).all(|w| w[0].0 < w[1].0), "verdicts out of order");
        Verdicts { list }
    }

    pub fn get(&self, pendo_id: &str) -> Option<&Outcome> {
        self.position(pendo_id).map(|i| &self.list[i].1)
    }

    fn position(&self, pendo_id: &str) -> Option<usize> {
        self.list.binary_search_by(|(id, _)| id.as_str().cmp(pendo_id)).ok()
    }

    pub fn len(&self) -> usize {
        self.list.len()
    }

    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&String, &Outcome)> {
        self.list.iter().map(|(id, o)| (id, o))
    }

    pub fn values(&self) -> impl Iterator<Item = &Outcome> {
        self.list.iter().map(|(_, o)| o)
    }
}

/// In any order; of two verdicts for one id the later is kept, as a map's insert would.
impl FromIterator<(String, Outcome)> for Verdicts {
    fn from_iter<I: IntoIterator<Item = (String, Outcome)>>(iter: I) -> Self {
        let mut list: Vec<(String, Outcome)> = iter.into_iter().collect();
        // Stable, so that among equal ids the last given is last; reversed, so dedup keeps it.
        list.reverse();
        list.sort_by(|a, b| a.0.cmp(&b.0));
        list.dedup_by(|later, earlier| later.0 == earlier.0);
        Verdicts { list }
    }
}

impl IntoIterator for Verdicts {
    type Item = (String, Outcome);
    type IntoIter = std::vec::IntoIter<(String, Outcome)>;

    fn into_iter(self) -> Self::IntoIter {
        self.list.into_iter()
    }
}

impl<'a> IntoIterator for &'a Verdicts {
    type Item = (&'a String, &'a Outcome);
    type IntoIter = std::iter::Map<std::slice::Iter<'a, (String, Outcome)>, fn(&'a (String, Outcome)) -> Self::Item>;

    fn into_iter(self) -> Self::IntoIter {
        self.list.iter().map(|(id, o)| (id, o))
    }
}

/// `verdicts["acme"]`, for tests and callers that know the id is there.
impl Index<&str> for Verdicts {
    type Output = Outcome;

    #[allow(clippy::panic)]
    fn index(&self, pendo_id: &str) -> &Outcome {
        match self.get(pendo_id) {
            Some(o) => o,
            None => panic!("no verdict for Pendo account {pendo_id:?}"),
        }
    }
}

/// Verdicts while matching settles them: each with the rank of the rule that made it (pins 0,
/// rules from 1 in chain order, `usize::MAX` for none), kept beside the list rather than in it.
pub(super) struct Ranked {
    verdicts: Verdicts,
    ranks: Vec<usize>,
}

impl Ranked {
    /// Verdicts for `ids`, made by `decide` in id order (so the list needs no sort); of
    /// repeated ids the last listed decides.
    pub(super) fn decide(ids: &[&str], mut decide: impl FnMut(usize) -> (Outcome, usize)) -> Self {
        let mut order: Vec<u32> = (0..u32::try_from(ids.len()).unwrap_or(u32::MAX)).collect();
        // Stable: among equal ids the original order stays, and the last of them is kept.
        order.sort_by_key(|&i| ids[i as usize]);
        order.dedup_by(|later, earlier| {
            let same = ids[*later as usize] == ids[*earlier as usize];
            if same {
                *earlier = *later;
            }
            same
        });
        let mut list = Vec::with_capacity(order.len());
        let mut ranks = Vec::with_capacity(order.len());
        for i in order {
            let i = i as usize;
            let (outcome, rank) = decide(i);
            list.push((ids[i].to_owned(), outcome));
            ranks.push(rank);
        }
        Ranked { verdicts: Verdicts::sorted(list), ranks }
    }

    pub(super) fn iter(&self) -> impl Iterator<Item = (&str, &Outcome, usize)> {
        self.verdicts.list.iter().zip(&self.ranks).map(|((id, o), &rank)| (id.as_str(), o, rank))
    }

    pub(super) fn get(&self, pendo_id: &str) -> Option<&Outcome> {
        self.verdicts.get(pendo_id)
    }

    pub(super) fn get_mut(&mut self, pendo_id: &str) -> Option<&mut Outcome> {
        let i = self.verdicts.position(pendo_id)?;
        Some(&mut self.verdicts.list[i].1)
    }

    pub(super) fn finish(self) -> Verdicts {
        self.verdicts
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unmatched(why: &str) -> Outcome {
        Outcome::Unmatched { reason: why.into() }
    }

    #[test]
    fn verdicts_are_in_id_order_and_the_last_of_a_repeated_id_wins() {
        let ids = ["b", "a", "c", "a"];
        let ranked = Ranked::decide(&ids, |i| (unmatched(&i.to_string()), i));
        let got: Vec<(&str, usize)> = ranked.iter().map(|(id, _, rank)| (id, rank)).collect();
        assert_eq!(got, [("a", 3), ("b", 0), ("c", 2)]);
        let verdicts = ranked.finish();
        assert_eq!(verdicts["a"], unmatched("3"));
        assert_eq!(verdicts.get("d"), None);

        let collected: Verdicts =
            [("b", "1"), ("a", "2"), ("a", "3")].into_iter().map(|(id, why)| (id.to_owned(), unmatched(why))).collect();
        let got: Vec<(&String, &Outcome)> = collected.iter().collect();
        assert_eq!(got, [(&"a".to_owned(), &unmatched("3")), (&"b".to_owned(), &unmatched("1"))]);
    }
}
