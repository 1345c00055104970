//! The OpenAPI 3 document the coordinator serves at `/api/v1/openapi.json`. A test checks that
//! it parses and names every route the router serves.

pub const DOCUMENT: &str = include_str!("openapi.json");
