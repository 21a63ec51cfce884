//! Fair shares of the classifier between connections: deficit round robin over tokens.
//!
//! A turn is one batch of work handed to the classifier. Counting turns by requests or by texts
//! lets a client that sends texts at the model's maximum length take several times the share of
//! one sending sentences (a text's cost grows with its tokens); counting by tokens does not.
//! Every connection with work gains [`TOKENS_PER_TURN`] credit per round, never holding more than
//! that, and takes part in a turn while its credit is above zero; what it used is charged after
//! the turn ([`Shares::charge`]), a debt carried into the next turns. So a request waits for at most one share of every other
//! connection's work, and work never waits while the classifier is idle.

use std::collections::{HashMap, VecDeque};

/// A connection's share of the classifier per turn, in tokens (about one ordinary sentence): a
/// `texts` request starts another text while it has credit left (so advances by this many
/// tokens a turn on average), and a client sending
/// texts of 128 tokens takes part every second turn beside clients sending sentences. It also
/// bounds how long a request that reaches an idle server waits for the `texts` request before it.
pub const TOKENS_PER_TURN: usize = 64;

/// The connections in turn order, with their credit in tokens.
#[derive(Debug, Default)]
pub struct Shares {
    order: VecDeque<usize>,
    credit: HashMap<usize, i64>,
}

impl Shares {
    /// A new connection, last in turn order, with no credit yet.
    pub fn join(&mut self, id: usize) {
        if self.credit.insert(id, 0).is_none() {
            self.order.push_back(id);
        }
    }

    pub fn leave(&mut self, id: usize) {
        if self.credit.remove(&id).is_some() {
            self.order.retain(|&t| t != id);
        }
    }

    /// The connections that take part in the next turn, in turn order, each with the tokens it
    /// may use, among those `ready` says have work. Empty only when none has. Rounds of credit
    /// repeat until one is in credit: a debt is at most one text's tokens, so a few rounds.
    pub fn next_turn(&mut self, mut ready: impl FnMut(usize) -> bool) -> Vec<(usize, usize)> {
        let quantum = TOKENS_PER_TURN as i64;
        let waiting: Vec<usize> = self.order.iter().copied().filter(|&id| ready(id)).collect();
        if waiting.is_empty() {
            return Vec::new();
        }
        loop {
            let mut turn = Vec::new();
            for &id in &waiting {
                let credit = self.credit.entry(id).or_insert(0);
                *credit = (*credit + quantum).min(quantum);
                if *credit > 0 {
                    turn.push((id, usize::try_from(*credit).unwrap_or(0)));
                }
            }
            if !turn.is_empty() {
                return turn;
            }
        }
    }

    /// Takes what a connection's part of a turn cost from its credit.
    pub fn charge(&mut self, id: usize, tokens: usize) {
        if let Some(credit) = self.credit.get_mut(&id) {
            *credit = credit.saturating_sub(i64::try_from(tokens).unwrap_or(i64::MAX));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs `turns` turns where every connection always has work and each text it sends costs
    /// `costs[id]` tokens; returns the tokens each was given.
    fn served(costs: &[usize], turns: usize) -> Vec<usize> {
        let mut shares = Shares::default();
        for id in 0..costs.len() {
            shares.join(id);
        }
        let mut given = vec![0; costs.len()];
        for _ in 0..turns {
            for (id, budget) in shares.next_turn(|_| true) {
                assert!(budget > 0 && budget <= TOKENS_PER_TURN);
                // As the worker does: another text while credit is left, one at least.
                let mut used = 0;
                while used < budget {
                    used += costs[id];
                }
                shares.charge(id, used);
                given[id] += used;
            }
        }
        given
    }

    #[test]
    fn clients_share_by_tokens_not_by_texts() {
        // Texts of 128 tokens beside texts of 16 and 40: the same tokens each, within a text.
        let given = served(&[128, 16, 40], 1000);
        let fair = TOKENS_PER_TURN * 1000;
        for (id, g) in given.iter().enumerate() {
            assert!(
                g.abs_diff(fair) <= 128,
                "connection {id} got {g} tokens of {fair}: {given:?}"
            );
        }
    }

    #[test]
    fn a_connection_in_debt_still_gets_the_idle_classifier() {
        let mut shares = Shares::default();
        shares.join(7);
        let turn = shares.next_turn(|_| true);
        assert_eq!(turn, vec![(7, TOKENS_PER_TURN)]);
        shares.charge(7, 10 * TOKENS_PER_TURN);
        assert_eq!(shares.next_turn(|_| true), vec![(7, TOKENS_PER_TURN)]);
    }

    #[test]
    fn a_connection_in_debt_waits_while_others_have_their_share() {
        let mut shares = Shares::default();
        shares.join(1);
        shares.join(2);
        assert_eq!(shares.next_turn(|_| true).len(), 2);
        shares.charge(1, 3 * TOKENS_PER_TURN);
        shares.charge(2, 1);
        // 1 owes two turns' worth beyond its own.
        for _ in 0..2 {
            assert_eq!(shares.next_turn(|_| true), vec![(2, TOKENS_PER_TURN)]);
            shares.charge(2, 1);
        }
        let ids: Vec<usize> = shares.next_turn(|_| true).iter().map(|p| p.0).collect();
        assert_eq!(ids, vec![1, 2]);
    }

    #[test]
    fn credit_does_not_pile_up_while_waiting_or_idle() {
        let mut shares = Shares::default();
        shares.join(1);
        shares.join(2);
        for _ in 0..50 {
            shares.next_turn(|id| id == 2);
        }
        let turn = shares.next_turn(|_| true);
        assert!(turn.iter().all(|&(_, b)| b <= TOKENS_PER_TURN), "{turn:?}");
    }

    #[test]
    fn no_work_no_turn_and_leaving_forgets() {
        let mut shares = Shares::default();
        shares.join(1);
        assert!(shares.next_turn(|_| false).is_empty());
        shares.leave(1);
        assert!(shares.next_turn(|_| true).is_empty());
        shares.charge(1, 5);
        shares.join(1);
        assert_eq!(shares.next_turn(|_| true), vec![(1, TOKENS_PER_TURN)]);
    }
}
