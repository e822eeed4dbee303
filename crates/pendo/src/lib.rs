//! pendo
