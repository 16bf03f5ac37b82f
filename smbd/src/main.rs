fn main() {
    println!("holdfast-smbd: not yet");
}
