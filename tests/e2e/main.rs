//! Black-box tests of the `kopilka` binary: what an operator types, what they see.

mod admin;
mod cli;
mod dev;
mod erasure;
mod mail;
mod retention;
mod serve;
mod stripe_sim;
mod widget;
