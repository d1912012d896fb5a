package domain

// Field gateways: a device with Gateway set obtains the tokens of its children, the
// devices whose Parent names it. The relation is one level deep, as IoT Edge
// parent/child scopes: a gateway has no parent, so no chain or cycle can form and a
// gateway's authority never reaches beyond its direct children.

// CheckGatewayShape applies the rules a device's own gateway fields must meet: a
// gateway has no parent, and no device is its own parent.
func (d *Device) CheckGatewayShape() error {
	switch {
	case d.Parent == "":
		return nil
	case d.Parent == d.ID:
		return Invalid("parent: a device cannot be its own parent")
	case d.Gateway:
		return Invalid("parent: a gateway cannot have a parent (gateways are one level deep)")
	case !ValidID(d.Parent):
		return Invalid("parent must be %s", IDRule)
	}
	return nil
}

// CheckParent applies the rules between a leaf d and the device p its Parent names: p
// must be a gateway on d's hub.
func (d *Device) CheckParent(p Device) error {
	switch {
	case !p.Gateway:
		return Invalid("parent: device %q is not a gateway", p.ID)
	case p.Hub != d.Hub:
		return Invalid("parent: gateway %q is on hub %q, not on the device's hub %q", p.ID, p.Hub, d.Hub)
	}
	return nil
}

// MayObtainFor reports whether d, as a gateway, may obtain tokens for device c: d is
// an enabled gateway, c is an enabled device whose parent is d — the device d is, not
// an earlier one with its ID (ParentCreatedAt) — on d's hub. A device is never its own
// child; its own token is an ordinary request.
func (d *Device) MayObtainFor(c *Device) bool {
	return d.Gateway && !d.Disabled && d.ID != "" &&
		c.ID != d.ID && c.Parent == d.ID && !c.Disabled && c.Hub == d.Hub &&
		(c.ParentCreatedAt.IsZero() || c.ParentCreatedAt.Equal(d.CreatedAt))
}

// SetParent makes p, a device CheckParent accepted, d's parent.
func (d *Device) SetParent(p Device) {
	d.Parent, d.ParentCreatedAt = p.ID, p.CreatedAt
}
