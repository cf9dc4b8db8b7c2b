# Evaluates flake.nix's devShells against a STUB nixpkgs that lists every attribute the
# flake may use, and checks flake.lock against flake.nix. nixpkgs itself cannot be fetched
# everywhere (this is what `make lint` runs offline); a typo in an attribute name, a
# missing system, a wrong env var or a lock that does not match the inputs fails here.
#   nix-instantiate --eval --strict --json scripts/flake-stub.nix --arg dir ./. [--argstr valkeyVersion 8.1.8]
# Package versions below are stub labels; valkeyVersion picks which side of the flake's
# "is nixpkgs' valkey a Valkey 8?" branch is evaluated (scripts/nix-check.sh checks both).
{
  dir ? ../.,
  valkeyVersion ? "9.1.1",
}:
let
  flake = import (dir + "/flake.nix");
  lock = builtins.fromJSON (builtins.readFile (dir + "/flake.lock"));
  fail = msg: builtins.throw "flake check: ${msg}";
  expect = cond: msg: if cond then true else fail msg;

  systems = [
    "x86_64-linux"
    "aarch64-linux"
    "x86_64-darwin"
    "aarch64-darwin"
  ];
  genAttrs =
    names: f:
    builtins.listToAttrs (
      map (n: {
        name = n;
        value = f n;
      }) names
    );

  # A stub package: enough of a derivation to be interpolated into strings and listed.
  pkg = system: name: version: {
    type = "derivation";
    inherit name version system;
    pname = name;
    outPath = "/nix/store/00000000000000000000000000000000-${name}-${version}";
  };
  lib = {
    inherit genAttrs;
    optionalAttrs = cond: attrs: if cond then attrs else { };
    optional = cond: x: if cond then [ x ] else [ ];
    versions.major = v: builtins.head (builtins.splitVersion v);
    makeLibraryPath = ps: builtins.concatStringsSep ":" (map (p: "${p}/lib") ps);
    systems.flakeExposed = systems ++ [ "armv6l-linux" "riscv64-linux" ];
  };
  pkgsFor =
    system:
    let
      p = pkg system;
      isLinux = builtins.match ".*-linux" system != null;
    in
    {
      inherit lib;
      mkShell = args: args // { stubShell = true; inherit system; };
      python312 = p "python3" "3.12.11";
      uv = p "uv" "0.8.4";
      postgresql_16 = p "postgresql" "16.15";
      valkey = p "valkey" valkeyVersion;
      docker-compose = p "docker-compose" "2.39.1";
      gnumake = p "gnumake" "4.4.1";
      git = p "git" "2.50.1";
      zlib = p "zlib" "1.3.1";
      stdenv = {
        inherit isLinux;
        isDarwin = !isLinux;
        cc.cc.lib = p "gcc-lib" "14.3.0";
      };
    };
  nixpkgs = {
    inherit lib;
    legacyPackages = genAttrs systems pkgsFor;
    outPath = "/nix/store/00000000000000000000000000000000-source";
  };

  outputs = flake.outputs {
    self = outputs // { outPath = dir; };
    inherit nixpkgs;
  };

  valkey8 = builtins.head (builtins.splitVersion valkeyVersion) == "8";
  wanted = [ "python3" "uv" "postgresql" "docker-compose" "gnumake" ] ++ (if valkey8 then [ "valkey" ] else [ ]);
  checkShell =
    system:
    let
      shell =
        if outputs ? devShells && outputs.devShells ? ${system} && outputs.devShells.${system} ? default
        then outputs.devShells.${system}.default
        else fail "devShells.${system}.default is missing";
      pkgs = pkgsFor system;
      env = shell.env or { };
      names = map (p: p.pname or "<not a package>") (shell.packages or [ ]);
      missing = builtins.filter (n: !(builtins.elem n names)) wanted;
    in
    assert expect (shell.stubShell or false) "devShells.${system}.default is not built with pkgs.mkShell";
    assert expect (missing == [ ]) "devShells.${system}.default lacks packages: ${toString missing}";
    assert expect ((env.E2E_PG_BIN or "") == "${pkgs.postgresql_16}/bin")
      "E2E_PG_BIN must be \"\${pkgs.postgresql_16}/bin\" (got \"${env.E2E_PG_BIN or "unset"}\")";
    assert expect (
      if valkey8 then
        (env.E2E_VALKEY_BIN or "") == "${pkgs.valkey}/bin/valkey-server"
      else
        !(env ? E2E_VALKEY_BIN) && !(builtins.elem "valkey" names)
    ) (
      if valkey8 then
        "E2E_VALKEY_BIN must be \"\${pkgs.valkey}/bin/valkey-server\" when nixpkgs' valkey is 8.x (got \"${env.E2E_VALKEY_BIN or "unset"}\")"
      else
        "with nixpkgs' valkey at ${valkeyVersion}, the shell must neither set E2E_VALKEY_BIN nor ship valkey (the pinned Valkey 8 wheel is used)"
    );
    assert expect (builtins.match ".*\\.venv/bin.*" (shell.shellHook or "") != null)
      "the shellHook must put .venv/bin on PATH";
    assert expect ((env.UV_PYTHON or "") == "${pkgs.python312}/bin/python3")
      "UV_PYTHON must point at the shell's python312";
    assert expect ((env.UV_PYTHON_DOWNLOADS or "") == "never") "UV_PYTHON_DOWNLOADS must be \"never\"";
    {
      packages = names;
      inherit (env) E2E_PG_BIN UV_PYTHON;
      E2E_VALKEY_BIN = env.E2E_VALKEY_BIN or null;
      shellHook = builtins.stringLength (shell.shellHook or "") > 0;
    };

  # flake.lock: every input of flake.nix is locked to a full rev with a narHash.
  inputNames = builtins.attrNames (flake.inputs or { });
  rootInputs = lock.nodes.${lock.root}.inputs or { };
  checkInput =
    name:
    let
      node = lock.nodes.${rootInputs.${name} or (fail "input '${name}' is not in flake.lock; run `nix flake lock`")};
      locked = node.locked or { };
      url = flake.inputs.${name}.url or "";
      ref = node.original.ref or "";
    in
    assert expect (builtins.match "[0-9a-f]{40}" (locked.rev or "") != null)
      "flake.lock: ${name} is not locked to a full 40-hex rev";
    assert expect (builtins.match "sha256-[A-Za-z0-9+/]{43}=" (locked.narHash or "") != null)
      "flake.lock: ${name} has no sha256 narHash";
    assert expect (builtins.isInt (locked.lastModified or null)) "flake.lock: ${name} has no lastModified";
    assert expect (ref == "" || builtins.match ".*/${ref}" url != null)
      "flake.lock: ${name} was locked from ref '${ref}' but flake.nix asks for '${url}'; run `nix flake lock`";
    {
      inherit (locked) rev narHash lastModified;
      inherit ref;
    };
in
assert expect (lock.version or 0 == 7) "flake.lock version must be 7";
assert expect (builtins.sort builtins.lessThan (builtins.attrNames rootInputs) == inputNames)
  "flake.lock root inputs ${toString (builtins.attrNames rootInputs)} differ from flake.nix inputs ${toString inputNames}";
assert expect (builtins.attrNames (outputs.devShells or { }) == builtins.sort builtins.lessThan systems)
  "devShells must cover exactly ${toString systems} (got ${toString (builtins.attrNames (outputs.devShells or { }))})";
{
  devShells = genAttrs systems checkShell;
  inputs = genAttrs inputNames checkInput;
}
