"""The web console for approvers and responders, at ``/console`` on the admin listener (docs/console.md)."""
