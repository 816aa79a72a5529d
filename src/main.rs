fn main() {
    match atomgrad::Device::new() {
        Ok(d) => println!("{}", d.describe()),
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
    }
}
