"""Stand-in programs for what cannot run here (LXD, systemd, the firewall, Caddy, ZFS, fail2ban,
cron, DNS). Each module has `main(root, argv) -> exit code`; `StandinWorld` writes a launcher per
program into its `bin/` that calls it with the world's state directory."""
