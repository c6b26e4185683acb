pub mod verdict;
