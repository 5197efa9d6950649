//! Small pieces of the words mailferry says to people.

/// `n` and the noun that goes with it: "1 mailbox", "4 mailboxes", "0 entries".
pub fn counted(n: impl TryInto<u64>, one: &str, many: &str) -> String {
    let n: u64 = n.try_into().unwrap_or(u64::MAX);
    format!("{n} {}", if n == 1 { one } else { many })
}

#[cfg(test)]
mod tests {
    use super::counted;

    #[test]
    fn one_of_a_thing_is_singular_and_every_other_count_plural() {
        assert_eq!(counted(1usize, "mailbox", "mailboxes"), "1 mailbox");
        assert_eq!(counted(0usize, "mailbox", "mailboxes"), "0 mailboxes");
        assert_eq!(counted(4u64, "entry", "entries"), "4 entries");
        assert_eq!(counted(-1i64, "row", "rows"), format!("{} rows", u64::MAX));
    }
}
