//! The file formats the document and binary kinds write and edit, each in its own module and
//! none knowing about tokens: OOXML packages (`.docx`, `.xlsx`, `.docm`, `.xlsm`), VBA
//! projects, PDF, and Authenticode-signed PE files. A kind (in `crate::kinds`) decides what a
//! token's file says; these modules only build and inject, bounded against hostile uploads
//! (sizes checked before parsing, no panics, no temporary files).

pub mod authenticode;
pub mod der;
pub mod ooxml;
pub mod pdf;
pub mod pe;
pub mod vba;
pub mod vba_macro;
