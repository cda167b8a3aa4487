//! Test certificates made with `openssl`: a CA and leaves it signs, each
//! leaf good for `localhost` and 127.0.0.1 (or the names given), as a
//! server and as a client.

use std::path::{Path, PathBuf};
use std::process::Command;

pub struct Ca {
    pub cert: PathBuf,
    key: PathBuf,
    dir: PathBuf,
}

/// A certificate and its key.
pub struct Leaf {
    pub cert: PathBuf,
    pub key: PathBuf,
}

fn openssl(args: &[&str], dir: &Path) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl runs");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

const EC: [&str; 4] = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"];

impl Ca {
    /// A CA named `name`, its files under `dir`.
    pub fn new(dir: &Path, name: &str) -> Ca {
        std::fs::create_dir_all(dir).expect("cert dir");
        let (cert, key) = (
            dir.join(format!("{name}.pem")),
            dir.join(format!("{name}.key")),
        );
        let subj = format!("/CN={name}");
        let mut args = vec!["req", "-x509", "-nodes", "-days", "2", "-subj", &subj];
        args.extend(EC);
        let (c, k) = (cert.to_str().unwrap(), key.to_str().unwrap());
        args.extend(["-keyout", k, "-out", c]);
        args.extend([
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ]);
        openssl(&args, dir);
        Ca {
            cert,
            key,
            dir: dir.to_path_buf(),
        }
    }

    /// A leaf `name` signed by this CA, written to `name.pem`/`name.key`.
    pub fn leaf(&self, name: &str) -> Leaf {
        self.leaf_for(name, "DNS:localhost,IP:127.0.0.1")
    }

    /// As `leaf`, for the subject alternative names `san` (openssl's form:
    /// `DNS:a,IP:10.0.0.1`).
    pub fn leaf_for(&self, name: &str, san: &str) -> Leaf {
        let dir = &self.dir;
        let (cert, key) = (
            dir.join(format!("{name}.pem")),
            dir.join(format!("{name}.key")),
        );
        let csr = dir.join(format!("{name}.csr"));
        let ext = dir.join(format!("{name}.ext"));
        std::fs::write(
            &ext,
            format!(
                "subjectAltName={san}\nbasicConstraints=CA:FALSE\n\
                 keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth,clientAuth\n"
            ),
        )
        .expect("ext file");
        let subj = format!("/CN={name}");
        let mut args = vec!["req", "-nodes", "-subj", &subj];
        args.extend(EC);
        args.extend([
            "-keyout",
            key.to_str().unwrap(),
            "-out",
            csr.to_str().unwrap(),
        ]);
        openssl(&args, dir);
        let serial = format!("{}", rand::random::<u32>());
        openssl(
            &[
                "x509",
                "-req",
                "-days",
                "2",
                "-in",
                csr.to_str().unwrap(),
                "-CA",
                self.cert.to_str().unwrap(),
                "-CAkey",
                self.key.to_str().unwrap(),
                "-set_serial",
                &serial,
                "-extfile",
                ext.to_str().unwrap(),
                "-out",
                cert.to_str().unwrap(),
            ],
            dir,
        );
        Leaf { cert, key }
    }
}
