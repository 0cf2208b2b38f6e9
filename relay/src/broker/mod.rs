//! The MQTT side of qunbridge: the embedded broker (and the layer that reports what it
//! loses), the client every component uses, and the topic names.

pub mod client;
pub mod connection;
pub mod delivery;
pub mod embedded;
pub mod flow;
pub mod local;
pub mod lost;
pub mod topics;

pub use client::{
    BrokerClient, BrokerError, ClientOptions, Confirmation, Delivery, Endpoint, Flow,
};
pub use flow::{Capacity, Hops};
pub use topics::Topics;
