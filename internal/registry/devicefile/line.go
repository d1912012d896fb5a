package devicefile

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"

	"github.com/getkin/kin-openapi/openapi3"

	"github.com/tokensvc/tokensvc/api"
	"github.com/tokensvc/tokensvc/internal/domain"
	"github.com/tokensvc/tokensvc/internal/oapi"
	"github.com/tokensvc/tokensvc/internal/strictjson"
)

var deviceCreateSchema = sync.OnceValues(func() (*openapi3.Schema, error) {
	spec, err := openapi3.NewLoader().LoadFromData(api.Spec)
	if err != nil {
		return nil, err
	}
	ref := spec.Components.Schemas["DeviceCreate"]
	if ref == nil || ref.Value == nil {
		return nil, errors.New("spec has no DeviceCreate schema")
	}
	return ref.Value, nil
})

// parseDeviceLine holds one JSON object to the same rules as a POST /devices body: one
// strict JSON value, valid against DeviceCreate. Reasons name fields, never values.
func parseDeviceLine(b []byte) (oapi.DeviceCreate, error) {
	var out oapi.DeviceCreate
	if err := strictjson.Check(b); err != nil {
		return out, err
	}
	var generic any
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	if err := dec.Decode(&generic); err != nil {
		return out, errors.New("not a JSON object")
	}
	schema, err := deviceCreateSchema()
	if err != nil {
		return out, err
	}
	if err := schema.VisitJSON(generic, openapi3.MultiErrors()); err != nil {
		// Name the device in the report when the line names one validly.
		if obj, ok := generic.(map[string]any); ok {
			if id, ok := obj["deviceId"].(string); ok && domain.ValidID(id) {
				out.DeviceId = id
			}
		}
		return out, schemaReason(err)
	}
	if err := json.Unmarshal(b, &out); err != nil {
		return out, errors.New("not a DeviceCreate object")
	}
	return out, nil
}

// schemaReason reduces a schema error to its first rule and field.
func schemaReason(err error) error {
	var me openapi3.MultiError
	if errors.As(err, &me) && len(me) > 0 {
		err = me[0]
	}
	var se *openapi3.SchemaError
	if errors.As(err, &se) {
		where := "device"
		if p := se.JSONPointer(); len(p) > 0 {
			where = "field /" + strings.Join(p, "/")
		}
		return fmt.Errorf("%s: %s", where, se.Reason)
	}
	return errors.New("does not match DeviceCreate")
}
