"""Selection: pruning by a score (keep easy, hard, random) and class (or cluster) balancing."""
