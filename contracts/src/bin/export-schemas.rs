//! Writes the JSON Schema of every message to `contracts/schemas/`.

use std::path::PathBuf;
use std::process::ExitCode;

fn main() -> ExitCode {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("schemas");
    if let Err(error) = std::fs::create_dir_all(&dir) {
        eprintln!("export-schemas: cannot create {}: {error}", dir.display());
        return ExitCode::FAILURE;
    }
    for (name, schema) in contracts::schema::all() {
        let path = dir.join(format!("{name}.json"));
        if let Err(error) = std::fs::write(&path, contracts::schema::render(&schema)) {
            eprintln!("export-schemas: cannot write {}: {error}", path.display());
            return ExitCode::FAILURE;
        }
    }
    println!("wrote schemas to {}", dir.display());
    ExitCode::SUCCESS
}
